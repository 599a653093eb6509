"""Kill a real training process with SIGKILL at random moments, resume, and compare every tensor
bit for bit with an uninterrupted run of the same config."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from trainwell.checkpoint import list_checkpoints

STEPS = 300

# (recipe, overrides beyond the tiny text setup or None for non-text recipes)
CASES = {
    "gpt": ("default", dict(model__dropout=0.1, train__grad_accum=2)),
    "mlm": ("code_mlm", dict(model__dropout=0.1)),
    "cnn": ("digits_cnn", None),
    "mlp": ("diabetes_mlp", None),
    "simclr": ("digits_cluster", None),
    "flow": ("digits_density", None),
    # 4,000 env steps = 20 rollouts of 200 x 20 updates = 400 optimizer steps; 2 eval episodes
    # normalisation on: its running statistics must resume too
    "ppo": ("cartpole_ppo", {"data.total_env_steps": 4000, "data.eval_episodes": 2, "eval.stop_metric": "''",
                             "model.normalize_obs": "true", "data.normalize_reward": "true", "data.video": "false"}),
    # (2,200 - 200 warm-up) / 64 = 31 collections x 13 updates = 403 optimizer steps; the target network
    # is copied when the env steps pass a multiple of 100 (after some collections, not others), so
    # kills land between copies
    "dqn": ("cartpole_dqn", {"data.total_env_steps": 2200, "data.learning_starts": 200, "data.collect_steps": 64,
                             "data.updates_per_collect": 13, "data.target_every_env_steps": 100,
                             "data.eval_episodes": 2, "eval.stop_metric": "''",
                             "model.hidden": "[32,32]", "data.video": "false"}),
    # masked actions + env state via get_state/set_state: 6 rollouts of 4 x 32 env steps x 64 updates
    "placement": ("placement_ppo", {"data.total_env_steps": 768, "data.num_envs": 4, "data.minibatch_size": 32,
                                    "data.update_epochs": 16, "data.eval_episodes": 3, "model.hidden": "[32]",
                                    "data.video": "false"}),
}
TOTALS = {"ppo": 400, "dqn": 403, "placement": 384}


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "trainwell", *args], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ})


def sets(tiny, extra) -> list[str]:
    if isinstance(extra, dict) and any("." in k for k in extra):  # raw keys for non-text recipes
        loop = ["checkpoint.every=7", "eval.every=50", "log.tensorboard=false", "log.plots=false"]
        flat = loop + [f"{k}={v}" for k, v in extra.items()]
        return [a for s in flat for a in ("--set", s)]
    # dropout exercises the RNG streams; grad_accum the micro-batch boundary; eval the val path.
    common = dict(train__steps=STEPS, checkpoint__every=7, eval__every=50, log__tensorboard=False,
                  log__plots=False)
    if extra is None:  # in-memory datasets: only the loop settings
        flat = [f"{k.replace('__', '.')}={str(v).lower() if isinstance(v, bool) else v}"
                for k, v in {**common, "train__epochs": 0, "train__threads": 1}.items()]
    else:
        flat = tiny(eval__samples=0, **common, **extra)
    return [a for s in flat for a in ("--set", s)]


def final_tensors(run: Path, name: str) -> dict:
    newest = max(run.glob("checkpoints/step-*"), key=lambda p: int(p.name.split("-")[1]))
    return load_file(newest / name)


def assert_identical(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        # bitwise: compare raw bytes so -0.0/0.0 or NaN payloads cannot hide a difference
        assert a[key].contiguous().view(-1).numpy().tobytes() == b[key].contiguous().view(-1).numpy().tobytes(), key


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path, tiny, case):
    recipe, extra = CASES[case]
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    args = [recipe, *sets(tiny, extra)]
    done = subprocess.run([sys.executable, "-m", "trainwell", "train", "--run-dir", str(ref), *args],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr

    rng = random.Random(os.getpid() ^ int(time.time()))
    total = TOTALS.get(case, STEPS)
    kills = 0
    cmd = ["train", "--run-dir", str(killed), *args]
    for attempt in range(3):
        proc = start(cmd)
        # wait until this attempt has written at least one new checkpoint, then kill at a random instant
        before = {p.name for p in list_checkpoints(killed / "checkpoints")} if killed.exists() else set()
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None:
            now = {p.name for p in list_checkpoints(killed / "checkpoints")} if killed.exists() else set()
            if now - before:
                break
            time.sleep(0.01)
        time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
        else:
            assert proc.returncode == 0, proc.stderr.read()
            break
        cmd = ["train", "--resume", str(killed)]
    assert kills >= 1, "the run finished before it could be killed; raise STEPS"
    if proc.returncode != 0:  # last attempt was killed: finish the run
        done = subprocess.run([sys.executable, "-m", "trainwell", *cmd], capture_output=True, text=True,
                              timeout=600)
        assert done.returncode == 0, done.stderr

    newest = lambda run: max(run.glob("checkpoints/step-*"), key=lambda p: int(p.name.split("-")[1])).name  # noqa: E731
    assert newest(ref) == newest(killed) == f"step-{total}"
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert_identical(final_tensors(ref, name), final_tensors(killed, name))
    # the metrics log holds each step once, in order, even though steps after a checkpoint were redone
    import json

    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in line]
    assert steps == sorted(set(steps)) and steps[-1] == total
