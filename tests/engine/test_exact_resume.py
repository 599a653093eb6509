"""Kill a real training process with SIGKILL at random moments, resume, and compare every tensor
bit for bit with an uninterrupted run of the same config."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

import forked
from tinyrun import run_cli_here
from trainwell.checkpoint import list_checkpoints

STEPS = 150  # two kills and three epochs of the digits runs fit; kills land early (after the first new checkpoint)
# the user's tiny regressor (byo, fit) trains 150 steps in ~0.15 s: a forked process (no import time) would
# finish before the kill (up to 0.3 s after its first checkpoint), so those two run longer
FAST = 1500

# recipe -> overrides. Text recipes: beyond the tiny text setup (dropout exercises the RNG streams,
# grad_accum the micro-batch boundary). Others: raw keys, after the loop settings below (small
# models and baselines: what is tested is that every piece of state resumes, not the model's quality)
TEXT = {
    "gpt": ("default", dict(model__dropout=0.1, train__grad_accum=2)),
    "mlm": ("code_mlm", dict(model__dropout=0.1)),
}
CASES = {
    "cnn": ("digits_cnn", {"model.channels": "[8,16]", "train.batch_size": 32}),
    # fresh augmentations every batch; k-means baselines and scores on a small embedding
    "simclr": ("digits_cluster", {"model.channels": "[8]", "model.embed_dim": 16, "model.proj_dim": 8,
                                  "train.batch_size": 32}),
    # fresh dequantization noise every batch; one GMM baseline
    "flow": ("digits_density", {"model.couplings": 2, "model.hidden": 32, "objective.gmm_components": "[1]",
                                "train.batch_size": 32}),
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
# preference stages on the tiny rows from the tiny pretrained checkpoint (tests/conftest.py `pref`): row
# position (sft, reward, dpo with its reference log-probs computed again on resume), and the rollout
# source (ppo, grpo): prompt position, sampling generator, the rollout buffer and its minibatch epochs
PREF = {
    "sft": {"model.dropout": 0.1, "train.grad_accum": 2},
    "reward": {},
    "dpo": {"objective.reference": "precompute"},
    # 4 prompts x 1 completion, 2 epochs of 2 minibatches: 4 optimizer steps per rollout
    "ppo": {"objective.reward_model": "", "objective.reward_funcs": ["pref_rewards:spaces"], "data.update_epochs": 2,
            "data.minibatch_size": 2, "train.steps": 160},
    # 4 prompts x 2 completions, one step per rollout, KL to a frozen reference
    "grpo": {"objective.reward_funcs": ["pref_rewards:spaces"], "objective.beta": 0.04, "train.steps": 100},
    # 4 pairs of the policy's own samples per step, labelled by a noisy judge (draws from the sampling generator)
    "online_dpo": {"objective.reward_funcs": ["pref_rewards:spaces"], "objective.label_temperature": 0.5,
                   "train.steps": 100},
}
LOOP = {"train.steps": STEPS, "train.epochs": 0, "train.threads": 1, "train.precision": "fp32", "checkpoint.every": 7,
        "eval.every": 50, "log.tensorboard": "false", "log.plots": "false"}
TOTALS = {"ppo": 400, "dqn": 403, "placement": 384, "pref-ppo": 160, "pref-grpo": 100, "pref-online_dpo": 100, "byo": FAST, "fit": FAST}
# kills per case: every case is killed once at a random instant and resumed; a resumed run being
# killed again (resume of a resume) goes through the same code for every paradigm, so two cases
# (a text run and an RL run: different state) check it, and the rest save a process start
KILLS = {"gpt": 2, "ppo": 2}
# the memory check draws a batch (or steps the environments) and rewinds: on in the same two cases,
# resumed runs included (tests/engine/test_plan.py shows on/off bit-identical for every paradigm)
CHECKED = {"gpt", "ppo"}

# the user's own model, data and loss (defined in tests/paradigms/test_byo.py): by import path from
# a recipe, and as Python objects handed to trainwell.fit() by a script of the user's
BYO = Path(__file__).parents[1] / "paradigms"
CASES["byo"] = (str(BYO / "byo.toml"), {"train.steps": FAST})
SCRIPTS = {"fit": [str(BYO / "test_byo.py"), "fit", "--steps", str(FAST)]}  # trainwell.fit(..., checkpoint.every=7)
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(BYO), os.environ.get("PYTHONPATH", "")])}


def split(args: list[str]) -> dict:
    """``python`` arguments (``-m trainwell ...`` or a script and its arguments) as tests/forked.py takes them."""
    if args[:2] == ["-m", "trainwell"]:
        return dict(argv=args[2:], env=ENV)
    return dict(argv=args[1:], script=args[0], env=ENV)


def start(args: list[str]) -> forked.Forked:
    """A process forked from one that has imported torch and trainwell (tests/forked.py: ~4 s of CPU
    less than an interpreter start)."""
    return forked.start(**split(args))


def commands(case: str, tiny, run_dir: Path, pref=None) -> tuple[list[str], list[str]]:
    """(start a run in run_dir, resume it): the CLI for recipes, the user's own script for "fit"."""
    if case in SCRIPTS:
        return [*SCRIPTS[case], str(run_dir)], [*SCRIPTS[case], str(run_dir), "--resume"]
    if case.startswith("pref-"):
        from tinyrun import STAGES

        stage = case[len("pref-"):]
        extra = {k: {"false": False, "true": True}.get(v, v) if isinstance(v, str) else v
                 for k, v in {**LOOP, "eval.samples": 0, **PREF[stage]}.items()}
        recipe, flat = STAGES[stage], pref(stage, **{k.replace(".", "__"): v for k, v in extra.items()})
    elif case in TEXT:
        recipe, extra = TEXT[case]
        flat = tiny(eval__samples=0, train__steps=STEPS, checkpoint__every=7, eval__every=50,
                    log__tensorboard=False, log__plots=False, train__memory_check=case in CHECKED, **extra)
    else:
        recipe, extra = CASES[case]
        flat = [f"{k}={v}" for k, v in {**LOOP, **extra, "train.memory_check": str(case in CHECKED).lower()}.items()]
    cli = ["-m", "trainwell", "train"]
    sets = [a for s in flat for a in ("--set", s)]
    return [*cli, "--run-dir", str(run_dir), recipe, *sets], [*cli, "--resume", str(run_dir)]


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
@pytest.mark.parametrize("case", [*TEXT, *CASES, *SCRIPTS, *(f"pref-{s}" for s in PREF)])
def test_sigkill_at_random_points_then_resume_is_bit_identical(tmp_path, tiny, case, request, monkeypatch):
    ref, killed = tmp_path / "ref", tmp_path / "killed"
    pref = request.getfixturevalue("pref") if case.startswith("pref-") else None
    request.getfixturevalue("auto_precision")  # "auto" decides here as in the killed run's processes
    monkeypatch.syspath_prepend(str(BYO))  # the user's modules, found here as ENV's PYTHONPATH finds them there
    total = TOTALS.get(case, STEPS)
    # the killed run's processes are started, killed and resumed from a thread while the uninterrupted
    # run trains in this process (one thread each: the two cores of CI; an interpreter start less)
    outcome: dict = {}
    chain = threading.Thread(target=lambda: outcome.update(kill_and_resume(case, tiny, killed, pref)))
    chain.start()
    try:
        if case in SCRIPTS:
            from test_byo import fit_here

            fit_here(str(ref), steps=FAST)
        else:
            done = run_cli_here(*commands(case, tiny, ref, pref)[0][2:])  # without "-m trainwell"
            assert done.returncode == 0, done.stderr[-3000:]
    finally:
        chain.join()
    if "error" in outcome:
        raise outcome["error"]
    assert outcome["kills"] >= 1, "the run finished before it could be killed; raise STEPS"

    newest = lambda run: max(run.glob("checkpoints/step-*"), key=lambda p: int(p.name.split("-")[1])).name  # noqa: E731
    assert newest(ref) == newest(killed) == f"step-{total}"
    for name in ("model.safetensors", "optimizer.safetensors"):
        assert_identical(final_tensors(ref, name), final_tensors(killed, name))
    # the metrics log holds each step once, in order, even though steps after a checkpoint were redone
    import json

    steps = [json.loads(line)["step"] for line in (killed / "metrics.jsonl").read_text().splitlines()
             if "train/loss" in line]
    assert steps == sorted(set(steps)) and steps[-1] == total
    # log.plots = false: no paradigm drew a figure (the curves, a confusion matrix, samples, a placement)
    assert not list(ref.rglob("*.png")) and not list(killed.rglob("*.png"))


def kill_and_resume(case: str, tiny, killed: Path, pref) -> dict:
    """Start the run, SIGKILL it at a random instant after a new checkpoint (again in its resumed run
    for the KILLS cases), and resume it to the end; {"kills": n} or {"error": the failure}."""
    try:
        rng = random.Random(os.getpid() ^ int(time.time()))
        kills = 0
        cmd, resume = commands(case, tiny, killed, pref)
        for attempt in range(KILLS.get(case, 1)):  # killed in the first run (and again in its resumed run)
            proc = start(cmd)
            # wait until this attempt has written at least one new checkpoint, then kill at a random instant
            before = {p.name for p in list_checkpoints(killed / "checkpoints")} if killed.exists() else set()
            deadline = time.time() + 300
            while time.time() < deadline and proc.poll() is None:
                now = {p.name for p in list_checkpoints(killed / "checkpoints")} if killed.exists() else set()
                if now - before:
                    break
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))  # the shortest cases (flow, cnn) train ~0.7 s after their first checkpoint
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()
                kills += 1
            else:
                assert proc.returncode == 0, proc.output()[1]
                break
            cmd = resume
        if kills and proc.returncode != 0:  # last attempt was killed: finish the run
            if case in KILLS:  # a fresh interpreter (its own string-hash seed) finishes a run killed twice
                done = subprocess.run([sys.executable, *cmd], capture_output=True, text=True, timeout=600, env=ENV)
            else:
                done = forked.run(**split(cmd))
            assert done.returncode == 0, done.stderr
        return {"kills": kills}
    except BaseException as e:  # noqa: BLE001 - raised again by the test, in its own thread
        return {"error": e}
