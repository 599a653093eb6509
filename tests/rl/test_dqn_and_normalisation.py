"""DQN (replay source + TD objective), observation/reward normalisation, other environments, GIF."""

import json

import numpy as np
import pytest
import torch

import trainwell
from trainwell.errors import ConfigError

DQN_QUICK = ["log.progress=off", "log.tensorboard=false", "log.plots=false", "data.total_env_steps=1500",
             "data.learning_starts=200", "data.collect_steps=100", "data.updates_per_collect=20",
             "eval.stop_metric=''", "data.eval_episodes=2", "eval.every=100", "checkpoint.every=100",
             "model.hidden=[32,32]", "log.every=20"]


def test_dqn_cartpole_tiny_logs_and_writes_a_gif(tmp_path):
    res = trainwell.train("cartpole_dqn", DQN_QUICK, run_dir=tmp_path / "dqn")
    s = res.summary
    assert s["steps"] == (1500 - 200) // 100 * 20 and s["val_return"] > 0
    assert s["env_steps"] == 200 + 13 * 100
    logged = set().union(*[json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()])
    for key in ("train/loss", "train/q_mean", "rl/epsilon", "rl/env_steps_per_s", "rl/episode_return", "val/return"):
        assert key in logged, key
    gif = res.run_dir / "episode.gif"
    assert gif.exists() and s["video"] == "episode.gif"
    from PIL import Image

    with Image.open(gif) as im:
        assert im.n_frames > 1


def test_replay_source_state_restores_next_batches():
    from trainwell.config import load_config
    from trainwell.paradigms import build_job

    # a target copy every 30 env steps: after some collections of 20 steps and not after others
    cfg = load_config("cartpole_dqn", ["data.learning_starts=50", "data.collect_steps=20",
                                       "data.updates_per_collect=3", "data.target_every_env_steps=30",
                                       "model.hidden=[16]"])
    job = build_job(cfg, torch.device("cpu"))
    opt = torch.optim.SGD(job.model.parameters(), lr=0.05)

    def step(source, model):  # a real update between batches, so target copies matter
        batch = next(source)
        opt_ = torch.optim.SGD(model.parameters(), lr=0.05)
        loss = (model(batch["obs"]).gather(-1, batch["actions"][:, None]).squeeze(-1) - batch["target"]).pow(2).mean()
        opt_.zero_grad()
        loss.backward()
        opt_.step()
        return batch

    for _ in range(5):
        step(job.source, job.model)
    state, weights = job.source.state_dict(), {k: v.clone() for k, v in job.model.state_dict().items()}
    expected = [step(job.source, job.model) for _ in range(30)]  # crosses collections and target copies
    other = build_job(cfg, torch.device("cpu"))
    other.model.load_state_dict(weights)
    other.source.load_state_dict(state)
    got = [step(other.source, other.model) for _ in range(30)]
    for a, b in zip(expected, got):
        for key in a:
            assert torch.equal(a[key], b[key]), key
    del opt


def test_target_network_is_refreshed_by_env_steps_between_bursts_of_updates():
    """SB3's schedule: a copy whenever the env-step count passes a multiple of the interval,
    made after collecting, so the target stays fixed within a burst of updates."""
    from trainwell.config import load_config
    from trainwell.paradigms import build_job

    cfg = load_config("cartpole_dqn", ["data.learning_starts=50", "data.collect_steps=20",
                                       "data.updates_per_collect=4", "data.target_every_env_steps=50",
                                       "model.hidden=[16]"])
    job = build_job(cfg, torch.device("cpu"))
    src, model = job.source, job.model
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snapshot = lambda m: torch.cat([p.detach().flatten().clone() for p in m.parameters()])  # noqa: E731
    copies = []
    for _ in range(40):  # 10 collections of 20 env steps after the 50 warm-up steps
        steps, target, online = src.env_steps(), snapshot(src.target), snapshot(model)
        batch = next(src)
        if not torch.equal(snapshot(src.target), target):
            copies.append(src.env_steps())
            assert torch.equal(snapshot(src.target), online)  # the online network as it was
            assert src.env_steps() // 50 > steps // 50  # only when the count passed a multiple of 50
        loss = (model(batch["obs"]).gather(-1, batch["actions"][:, None]).squeeze(-1) - batch["target"]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    # env steps after each collection: 50 (warm-up), 70, 90, ..., 250; multiples of 50 passed at
    # 50 (a copy of the untrained network: no change), 110, 150, 210 and 250
    assert copies == [110, 150, 210, 250]


def test_td_target_is_reward_plus_discounted_target_value():
    from trainwell.config import load_config
    from trainwell.paradigms import build_job

    cfg = load_config("cartpole_dqn", ["model.hidden=[8]", "data.double_q=false", "data.gamma=0.9"])
    src = build_job(cfg, torch.device("cpu")).source
    b = {"next_obs": torch.randn(5, 4), "rewards": torch.ones(5), "terminated": torch.tensor([0., 1., 0., 0., 1.])}
    with torch.no_grad():
        best = src.target(b["next_obs"]).max(-1).values
    expect = 1 + 0.9 * best * (1 - b["terminated"])
    assert torch.allclose(src.td_target(b), expect)


def test_dqn_refuses_continuous_actions(tmp_path):
    with pytest.raises(ConfigError, match="discrete actions"):
        trainwell.train("cartpole_dqn", [*DQN_QUICK, "data.env_id=Pendulum-v1"], run_dir=tmp_path / "x")


def test_running_norm_matches_numpy():
    from trainwell.models.normalize import RunningNorm

    x = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 3))
    norm = RunningNorm((3,))
    for chunk in np.array_split(x, 7):
        norm.update(torch.as_tensor(chunk))
    assert np.allclose(norm.mean.numpy(), x.mean(0)) and np.allclose(norm.var.numpy(), x.var(0))
    z = norm(torch.as_tensor(x, dtype=torch.float32))
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-2


@pytest.mark.parametrize("env_id", ["Pendulum-v1", "Acrobot-v1", "FrozenLake-v1"])
def test_ppo_other_envs_with_normalisation(tmp_path, env_id):
    """Continuous (Gaussian) actions, another discrete env, a Discrete observation (one-hot), any id via
    data.env_id; the normalisers' state is saved."""
    res = trainwell.train("cartpole_ppo", [
        "log.progress=off", "log.tensorboard=false", "log.plots=false", f"data.env_id={env_id!r}",
        "data.total_env_steps=800", "eval.stop_metric=''", "data.eval_episodes=1", "eval.every=20",
        "checkpoint.every=20", "model.normalize_obs=true", "data.normalize_reward=true", "data.video=false"],
        run_dir=tmp_path / "run")
    assert res.summary["env_id"] == env_id and np.isfinite(res.summary["val_return"])
    from safetensors.torch import load_file

    newest = max(res.run_dir.glob("checkpoints/step-*"), key=lambda p: int(p.name.split("-")[1]))
    model = load_file(newest / "model.safetensors")
    assert float(model["obs_norm.count"]) == 800 - 200  # the last rollout is folded in at the next collect
    data = load_file(newest / "data.safetensors")
    assert any("reward_norm" in k for k in data)


def test_rl_keeps_the_checkpoint_with_the_highest_return(tmp_path):
    res = trainwell.train("cartpole_ppo", [
        "log.progress=off", "log.tensorboard=false", "log.plots=false", "data.total_env_steps=3000",
        "eval.stop_metric=''", "data.eval_episodes=2", "eval.every=20", "checkpoint.every=20", "checkpoint.keep=1",
        "data.video=false"], run_dir=tmp_path / "run")
    evals = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    evals = [(e["step"], e["val/return"]) for e in evals if "val/return" in e]
    best_step, best = max(evals, key=lambda e: (e[1], -e[0]))  # the first step that reached the maximum
    assert res.summary["best_val_return"] == best and res.summary["best_step"] == best_step
    kept = {p.name for p in (res.run_dir / "checkpoints").glob("step-*")}
    assert f"step-{best_step}" in kept and f"step-{res.summary['steps']}" in kept
