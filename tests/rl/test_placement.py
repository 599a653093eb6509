"""Macro placement: env API, action masks, HPWL, baselines, held-out split, masked PPO, resume."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch

import trainwell
from trainwell.rl import PLACEMENT_ENV
from trainwell.rl.placement import (HELDOUT, MacroPlacementEnv, Netlist, greedy_placement, heldout_id, hpwl,
                                    make_netlist, random_placement, valid_corners)

QUICK = ["log.progress=off", "log.tensorboard=false", "log.plots=false", "data.total_env_steps=1024",
         "data.eval_episodes=4", "eval.every=16", "checkpoint.every=16", "model.hidden=[32]"]


def test_env_passes_gymnasium_checker():
    from gymnasium.utils.env_checker import check_env

    check_env(gym.make(PLACEMENT_ENV).unwrapped, skip_render_check=False)


def test_hpwl_of_a_hand_made_placement():
    # macro 0: 1x1 at (0, 0) -> pin (0.5, 0.5); macro 1: 2x2 at (3, 1) -> pin (4, 2);
    # macro 2: 1x3 at (6, 0) -> pin (6.5, 1.5)
    nl = Netlist(sizes=np.array([[1, 1], [2, 2], [1, 3]]), nets=[np.array([0, 1]), np.array([0, 1, 2]),
                                                                  np.array([1, 2])], netlist_id=0)
    corners = np.array([[0, 0], [3, 1], [6, 0]])
    # net 0: 3.5 + 1.5; net 1: x 0.5..6.5 = 6, y 0.5..2 = 1.5; net 2: 2.5 + 0.5
    assert hpwl(nl, corners) == pytest.approx(5.0 + 7.5 + 3.0)


def test_mask_is_exactly_the_cells_that_fit():
    rng = np.random.default_rng(0)
    for _ in range(20):
        occupied = rng.random((7, 7)) < 0.3
        for w, h in ((1, 1), (2, 3), (3, 1)):
            brute = np.zeros((7, 7), dtype=bool)
            for y in range(7):
                for x in range(7):
                    brute[y, x] = x + w <= 7 and y + h <= 7 and not occupied[y:y + h, x:x + w].any()
            assert np.array_equal(valid_corners(occupied, w, h), brute)


def test_masked_random_episodes_never_overlap_and_end_with_minus_hpwl():
    env = gym.make(PLACEMENT_ENV).unwrapped
    rng = np.random.default_rng(1)
    for episode in range(30):
        obs, info = env.reset(seed=episode)
        coverage = np.zeros((env.grid, env.grid), dtype=int)
        done = False
        while not done:
            legal = np.flatnonzero(info["action_mask"])
            action = int(rng.choice(legal))
            m = env.placed
            obs, reward, done, _, info = env.step(action)
            (x, y), (w, h) = env.corners[m], env.netlist.sizes[m]
            assert x + w <= env.grid and y + h <= env.grid
            coverage[y:y + h, x:x + w] += 1
        assert coverage.max() == 1 and coverage.sum() == env.netlist.sizes.prod(1).sum()
        assert reward == pytest.approx(-info["hpwl"] / (env.nets * env.grid))
        assert info["hpwl"] == pytest.approx(hpwl(env.netlist, env.corners))


def test_illegal_action_ends_the_episode_with_the_penalty():
    env = MacroPlacementEnv(grid=6, macros=3, max_size=3, nets=2, max_pins=2)
    _, info = env.reset(seed=0)
    env.step(int(np.flatnonzero(info["action_mask"])[0]))
    illegal = int(np.flatnonzero(~env.action_mask())[0])
    _, reward, terminated, _, info = env.step(illegal)
    assert terminated and reward == -2.0 and info["illegal"]


def test_a_macro_with_no_free_cell_ends_the_episode_with_the_penalty():
    env = MacroPlacementEnv(grid=3, macros=3, max_size=2, nets=1, max_pins=2)
    for seed in range(100):  # find a netlist whose two largest macros are both 2 x 2
        env.reset(options={"netlist": seed})
        if (env.netlist.sizes[:2] == 2).all():
            break
    else:
        pytest.fail("no netlist with two 2 x 2 macros")
    _, reward, terminated, _, info = env.step(0)  # a 2 x 2 in the corner leaves no room for another
    assert terminated and reward == -2.0 and info["stuck"] and not info["action_mask"].any()


def test_greedy_beats_random_on_average_and_both_are_legal():
    rand, greedy = [], []
    for k in range(40):
        nl = make_netlist(heldout_id(k), macros=8, max_size=3, nets=10, max_pins=4)
        r, g = random_placement(nl, 10, np.random.default_rng(k)), greedy_placement(nl, 10)
        for corners in (r, g):
            cover = np.zeros((10, 10), dtype=int)
            for (x, y), (w, h) in zip(corners, nl.sizes):
                cover[y:y + h, x:x + w] += 1
            assert cover.max() == 1
        rand.append(hpwl(nl, r))
        greedy.append(hpwl(nl, g))
    assert np.mean(greedy) < 0.8 * np.mean(rand)


def test_training_netlists_never_use_heldout_ids():
    env = gym.make(PLACEMENT_ENV).unwrapped
    env.reset(seed=3)
    ids = []
    for _ in range(200):
        env.reset()
        ids.append(env.netlist.netlist_id)
    assert max(ids) < HELDOUT and len(set(ids)) == 200
    env.reset(options={"netlist": heldout_id(5)})
    assert env.netlist.netlist_id == HELDOUT + 5
    with pytest.raises(ValueError, match="unknown option"):
        env.reset(options={"netlsit": 1})


def test_env_state_round_trip_mid_episode():
    a = gym.make(PLACEMENT_ENV).unwrapped
    _, info = a.reset(seed=11)
    for _ in range(3):
        _, _, _, _, info = a.step(int(np.flatnonzero(info["action_mask"])[-1]))
    state, rng = a.get_state(), a.np_random.bit_generator.state
    b = gym.make(PLACEMENT_ENV).unwrapped
    b.reset(seed=999)
    b.set_state(state)
    b.np_random.bit_generator.state = rng
    assert np.array_equal(a._obs(), b._obs()) and np.array_equal(a.action_mask(), b.action_mask())
    for env in (a, b):  # finish the episode, then the next reset draws the same netlist from the RNG
        done = False
        while not done:
            _, _, done, _, info = env.step(int(np.flatnonzero(env.action_mask())[0]))
        env.reset()
    assert a.netlist.netlist_id == b.netlist.netlist_id


def test_masked_policy_samples_and_argmaxes_only_legal_actions():
    from trainwell.models.actor_critic import ActorCritic

    torch.manual_seed(0)
    model = ActorCritic(5, 6, [8], continuous=False)
    with torch.no_grad():  # make action 0 by far the most likely before masking
        model.actor[-1].bias.copy_(torch.tensor([50.0, 0, 0, 0, 0, 0]))
    mask = torch.tensor([[False, True, False, True, False, False]] * 64)
    obs = torch.randn(64, 5)
    dist, _ = model(obs, mask)
    assert set(dist.sample().tolist()) <= {1, 3}
    assert torch.isfinite(dist.entropy()).all()
    assert set(model.act(obs, deterministic=True, mask=mask).tolist()) <= {1, 3}
    assert model.act(obs, deterministic=True)[0] == 0  # unmasked: the big logit wins


def test_rollout_stores_masks_and_restores_next_batches():
    from sources import assert_source_resumes_exactly

    from trainwell.config import load_config

    cfg = load_config("placement_ppo", ["data.num_envs=2", "data.rollout_steps=12", "data.minibatch_size=8",
                                        "model.hidden=[16]"])
    # stop mid-rollout, mid-episode (3 minibatches per epoch); 60 more cross new rollouts and episodes
    batch = assert_source_resumes_exactly(cfg, before=5, after=60)
    assert batch["mask"].dtype == torch.bool and batch["mask"].shape == (8, 100)
    # every stored action was legal under its stored mask
    assert batch["mask"][torch.arange(8), batch["actions"]].all()


def test_placement_recipe_tiny_run_writes_the_comparison_and_png(tmp_path, cli):
    run = tmp_path / "place"
    sets = [*QUICK, "log.plots=true"]
    done = cli("train", "placement_ppo", "--run-dir", str(run), *[a for s in sets for a in ("--set", s)])
    assert done.returncode == 0, done.stderr
    summary = json.loads((run / "summary.json").read_text())
    for key in ("heldout_hpwl", "heldout_hpwl_random", "heldout_hpwl_greedy", "heldout_vs_random",
                "heldout_vs_greedy"):
        assert summary[key] > 0, key
    assert summary["heldout_hpwl_greedy"] < summary["heldout_hpwl_random"]
    assert (run / "placement.png").stat().st_size > 10_000
    assert (run / "episode.gif").stat().st_size > 1_000  # the env's rgb_array rendering, masked greedy policy
    assert summary["video_length"] == 8  # all 8 macros placed: the masked policy made no illegal move
    assert json.loads((run / "placement.json").read_text())["heldout_netlists"] == 4
    logged = set().union(*(json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()))
    assert {"val/hpwl", "val/vs_greedy", "rl/episode_return"} <= logged


def test_trained_briefly_beats_random_placement(tmp_path):
    # ~10k env steps (0.69 measured): far from converged, but a policy that ignored the netlist would stay near 1.0
    res = trainwell.train("placement_ppo", ["log.progress=off", "log.tensorboard=false", "log.plots=false",
                                            "data.total_env_steps=10240", "data.eval_episodes=50", "eval.every=0",
                                            "checkpoint.every=100000", "model.hidden=[64, 64]", "optim.lr=1e-3",
                                            "data.video=false"],
                          run_dir=tmp_path / "p")
    assert res.summary["heldout_vs_random"] < 0.85
    # log.plots = false: the comparison is written, its figure is not
    assert (tmp_path / "p" / "placement.json").is_file() and not (tmp_path / "p" / "placement.png").exists()
