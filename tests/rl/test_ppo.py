import json

import pytest
import torch

import trainwell
from trainwell.rl.gae import gae

QUICK = ["log.progress=off", "log.tensorboard=false", "log.plots=false", "data.total_env_steps=2000", "eval.stop_metric=''",
         "data.eval_episodes=2", "eval.every=40", "checkpoint.every=40"]


def brute_force_gae(r, v, nv, term, ended, gamma, lam):
    T, N = r.shape
    adv = torch.zeros(T, N)
    for n in range(N):
        for t in range(T):
            total, weight = 0.0, 1.0
            for k in range(t, T):
                delta = r[k, n] + gamma * nv[k, n] * (1 - term[k, n]) - v[k, n]
                total += weight * delta
                if ended[k, n]:
                    break
                weight *= gamma * lam
            adv[t, n] = total
    return adv


def test_gae_matches_definition_with_terminations_and_truncations():
    g = torch.Generator().manual_seed(0)
    T, N = 7, 3
    r, v, nv = (torch.rand(T, N, generator=g) for _ in range(3))
    term = torch.zeros(T, N)
    ended = torch.zeros(T, N)
    term[2, 0] = ended[2, 0] = 1  # a true end: no bootstrap
    ended[4, 1] = 1  # a time-limit truncation: bootstrap from the final observation's value
    adv, ret = gae(r, v, nv, term, ended, 0.9, 0.8)
    assert torch.allclose(adv, brute_force_gae(r, v, nv, term, ended, 0.9, 0.8), atol=1e-6)
    assert torch.allclose(ret, adv + v)


def test_ppo_cartpole_tiny(tmp_path):
    res = trainwell.train("cartpole_ppo", QUICK, run_dir=tmp_path / "ppo")
    s = res.summary
    assert s["steps"] == (2000 // 200) * 20 and "val_return" in s and s["val_return"] > 0
    lines = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = set().union(*lines)
    for key in ("train/approx_kl", "train/clip_frac", "train/entropy", "train/value_loss", "rl/env_steps",
                "rl/episode_return", "val/return"):
        assert key in logged, key


def test_rollout_state_restores_next_batches(tmp_path):
    from sources import assert_source_resumes_exactly

    from trainwell.config import load_config

    cfg = load_config("cartpole_ppo", ["data.num_envs=2", "data.rollout_steps=16", "data.minibatch_size=8"])
    # stop mid-rollout (4 minibatches per epoch); 200 more batches cross several new rollouts
    assert_source_resumes_exactly(cfg, before=7, after=200)


def test_unknown_env_is_a_clear_error(tmp_path):
    from trainwell.errors import ConfigError

    with pytest.raises(ConfigError, match="not a registered gymnasium environment"):
        trainwell.train("cartpole_ppo", [*QUICK, "data.env_id=NoSuchEnv-v0"], run_dir=tmp_path / "x")
