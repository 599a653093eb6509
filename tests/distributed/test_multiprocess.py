"""Real multi-process runs (torchrun, gloo, 2 processes, tiny GPT, one thread each).

Process start-up dominates, so few launches check many things:

* DDP and FSDP2 with 2 ranks track the 1-process run of the same global batch. Not bit for bit:
  the ranks' gradients are averaged by an all-reduce, a different floating-point summation order
  than one process's batch mean (fp32 rounding, ~1e-7 relative per step; Adam and 12 steps keep
  it far below the 1e-5 tolerance used here).
* Sharded checkpoints: one file per rank, JSON index, resharded on load (2 ranks -> 1 process,
  DDP -> FSDP, 1 process -> 2 FSDP ranks), and `trainwell eval`/`generate` read them.
* Faults: a SIGKILLed rank is restarted by torchrun's elastic agent and the run resumes (same
  world size) to the bit-identical result; a hung rank makes the others fail with a message naming rank and operation.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import forked
from tinyrun import tiny_sets
from trainwell.checkpoint import load_entry

STEPS = 12
TOL = 1e-5  # see the module docstring: reduction order, not a difference in the algorithm


def launch(args: list[str], env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    """Run trainwell in its own process group, so a timeout also stops torchrun and its workers; a
    one-process command is forked from a process that has imported torch (tests/forked.py)."""
    if "--nproc" not in args:
        try:
            return forked.run(args, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
        except subprocess.TimeoutExpired:
            pytest.fail(f"trainwell {' '.join(args[:2])} did not finish in {timeout} s")
    cmd = [sys.executable, "-m", "trainwell", *args]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"trainwell {' '.join(args[:2])} did not finish in {timeout} s; its output:\n{(out + err)[-4000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def train(run_dir: Path, text: Path, *extra: str, nproc: int = 1, env: dict | None = None,
          more: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    # AdamW: the 1e-5 tracking below holds for it; Muon's Newton-Schulz step multiplies the reduction
    # order's rounding up by orders of magnitude (test_muon_fsdp.py checks Muon on shards exactly)
    sets = tiny_sets(text, train__steps=STEPS, train__grad_accum=2, checkpoint__every=4, eval__every=6,
                     log__every=2, log__plots=False, log__tensorboard=False, optim__name="adamw",
                     train__memory_check=True)  # the plan of a sharded step, checked on every rank
    args = ["train", "default", "--run-dir", str(run_dir), *[a for s in [*sets, *extra] for a in ("--set", s)]]
    if nproc > 1:
        args += ["--nproc", str(nproc), *more]
    done = launch(args, env)
    return done


def ok(done: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def losses(run_dir: Path, key: str) -> dict[int, float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in rows if key in r}


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def assert_bitwise(a: dict, b: dict, entry: str) -> None:
    """Model or (parameter-name keyed) optimizer state: every tensor equal bit for bit."""
    flat = (lambda s: s) if entry == "model" else (  # noqa: E731
        lambda s: {f"{p}/{m}": t for p, st in s["state"].items() for m, t in st.items()})
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for k in fa:
        assert fa[k].dtype == fb[k].dtype and fa[k].numpy().tobytes() == fb[k].numpy().tobytes(), (entry, k)
    if entry == "optimizer":
        assert a["param_groups"] == b["param_groups"]


def resume_copy(src: Path, dst: Path, keep_step: int) -> Path:
    """A copy of a finished run whose newest checkpoint is step ``keep_step``."""
    shutil.copytree(src, dst)
    for p in (dst / "checkpoints").glob("step-*"):
        if int(p.name.split("-")[1]) > keep_step:
            shutil.rmtree(p)
    return dst


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_text):
    root = tmp_path_factory.mktemp("dist")
    ok(train(root / "one", tiny_text))
    # DDP with torch.compile (aot_eager: dynamo's DDP graph splitting and the traced backward, without
    # inductor's code generation: tests/engine/test_loop_features.py compiles with inductor); FSDP2 with
    # activation checkpointing of every block
    ok(train(root / "ddp", tiny_text, "train.compile=true", "train.compile_backend='aot_eager'", nproc=2))
    ok(train(root / "fsdp", tiny_text, "distributed.strategy='fsdp'", "train.activation_checkpointing=1", nproc=2))
    return root, tiny_text


def test_ddp_and_fsdp_track_one_process_and_checkpoints_reshard(runs, tmp_path):
    root, text = runs
    one = load_entry(root / "one" / "checkpoints" / f"step-{STEPS}", "model")
    for name in ("ddp", "fsdp"):
        run = root / name
        ckpt = run / "checkpoints" / f"step-{STEPS}"
        assert max_diff(load_entry(ckpt, "model"), one) < TOL, name
        for key in ("train/loss", "val/loss"):
            a, b = losses(run, key), losses(root / "one", key)
            assert a.keys() == b.keys()  # rank 0 alone logs: every step once
            assert all(abs(a[s] - b[s]) < TOL * max(1.0, abs(b[s])) for s in a), (name, key)
        # one safetensors file per rank + JSON; nothing that would need unpickling
        assert {p.name for p in ckpt.iterdir()} == {"shard-00000-of-00002.safetensors",
                                                    "shard-00001-of-00002.safetensors", "index.json", "manifest.json"}
        # rank 0 alone wrote the run's files (a second writer would leave stray or duplicated output)
        assert sorted(p.name for p in run.iterdir()) == sorted(p.name for p in (root / "one").iterdir())
        summary = json.loads((run / "summary.json").read_text())
        assert summary["tokens_seen"] == json.loads((root / "one" / "summary.json").read_text())["tokens_seen"]

    # FSDP: each rank wrote its own rows of every matrix (params and Adam moments)
    index = json.loads((root / "fsdp" / "checkpoints" / f"step-{STEPS}" / "index.json").read_text())
    pieces = index["entries"]["optimizer"]["tensors"]["state/tok_emb.weight/exp_avg"]["pieces"]
    assert sorted(p[0] for p in pieces) == [0, 1] and sum(p[2] for p in pieces) == pieces[1][1] * 2

    # inference tools read a sharded checkpoint (one process, full tensors from both shards)
    out = ok(launch(["eval", str(root / "fsdp")])).stdout
    val = float(next(line.split()[1] for line in out.splitlines() if line.startswith("val/loss")))
    assert val == pytest.approx(losses(root / "fsdp", "val/loss")[STEPS], abs=1e-4)  # printed to 4 places
    assert ok(launch(["generate", str(root / "fsdp"), "--max-new-tokens", "8"])).stdout.startswith("--- sample 1")

    # resharding: the 2-rank FSDP checkpoint of step 4 resumed by ONE process, and the 2-rank DDP
    # checkpoint resumed by 2 FSDP ranks (replicated -> sharded); both still track the 1-process run
    single = resume_copy(root / "fsdp", tmp_path / "fsdp-to-1", 4)
    ok(launch(["train", "--resume", str(single)]))
    assert max_diff(load_entry(single / "checkpoints" / f"step-{STEPS}", "model"), one) < TOL
    to_fsdp = resume_copy(root / "ddp", tmp_path / "ddp-to-fsdp", 4)
    ok(launch(["train", "--resume", str(to_fsdp), "--nproc", "2", "--set", "distributed.strategy='fsdp'",
               "--set", "train.compile=false"]))
    assert max_diff(load_entry(to_fsdp / "checkpoints" / f"step-{STEPS}", "model"), one) < TOL
    # and a 1-process checkpoint (the single-process format) continued by 2 FSDP ranks
    from_one = resume_copy(root / "one", tmp_path / "one-to-fsdp", 4)
    ok(launch(["train", "--resume", str(from_one), "--nproc", "2", "--set", "distributed.strategy='fsdp'"]))
    assert max_diff(load_entry(from_one / "checkpoints" / f"step-{STEPS}", "model"), one) < TOL


def test_a_killed_rank_is_restarted_and_resumes_exactly(runs, tmp_path):
    root, text = runs
    # an FSDP rank SIGKILLs itself at step 7 (after the step-4 checkpoint); torchrun's agent restarts
    # the group, which resumes from step 4 (same world size) and must end bit-identical to the
    # undisturbed FSDP run: model shards, Adam moments, step counts
    killed = tmp_path / "killed"
    done = ok(train(killed, text, "distributed.strategy='fsdp'", "train.activation_checkpointing=1", nproc=2,
                    more=("--max-restarts", "1"), env={"TRAINWELL_FAULT": "kill:1:7"}))
    assert "resumed from" in done.stdout + done.stderr
    ref = root / "fsdp" / "checkpoints" / f"step-{STEPS}"
    got = killed / "checkpoints" / f"step-{STEPS}"
    for entry in ("model", "optimizer"):
        assert_bitwise(load_entry(ref, entry), load_entry(got, entry), entry)
    steps = sorted(losses(killed, "train/loss"))
    assert steps == list(range(2, STEPS + 1, 2))  # redone steps are logged once


def test_a_hung_rank_times_out_with_a_message_naming_rank_and_operation(tiny_text, tmp_path):
    done = train(tmp_path / "hang", tiny_text, "distributed.timeout_s=3", nproc=2,
                 env={"TRAINWELL_FAULT": "hang:1:3"})
    assert done.returncode != 0
    assert ("rank 0 of 2: the gradient all-reduce in the backward of step 3 did not complete within "
            "distributed.timeout_s = 3 s") in done.stderr
