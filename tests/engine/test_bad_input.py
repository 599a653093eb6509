"""Bad input: one clear sentence, a non-zero exit, no traceback, nothing lost.

The commands under test that train (resuming past a corrupt checkpoint, branching) and the first
checks (malformed recipe, unknown key) run as real processes; the runs they start from and the other
refusals run the same CLI in this process (``cli_here``: the same exit status and streams, without an
interpreter start each)."""

from __future__ import annotations

import errno
import math
from pathlib import Path

import pytest

from trainwell import checkpoint as ckpt
from trainwell.config import load_config
from trainwell.api import train
from trainwell.errors import CheckpointError, TrainingDiverged


def clean_failure(out, *words):
    assert out.returncode != 0, out.stdout
    assert "Traceback" not in out.stderr, out.stderr
    assert out.stderr.startswith("error: "), out.stderr
    for w in words:
        assert w in out.stderr, out.stderr


def sets_args(sets):
    return [a for s in sets for a in ("--set", s)]


def test_malformed_recipe(cli, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nsteps = 3\n")
    clean_failure(cli("train", str(bad)), "not valid TOML", "line 1")


def test_unknown_key_and_wrong_type(cli):
    clean_failure(cli("train", "--set", "optim.lrr=1"), "did you mean 'optim.lr'")
    clean_failure(cli("train", "--set", "train.steps=ten"), "train.steps", "integer")


def test_missing_and_empty_data(cli_here, tmp_path, tiny):
    clean_failure(cli_here("train", "--run-dir", str(tmp_path / "a"),
                      *sets_args(tiny(data__path=str(tmp_path / "nope.txt")))), "does not exist")
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    clean_failure(cli_here("train", "--run-dir", str(tmp_path / "b"), *sets_args(tiny(data__path=str(empty)))),
                  "only 0 characters")


def test_unwritable_run_dir(cli_here, tmp_path, tiny):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    clean_failure(cli_here("train", "--run-dir", str(blocker / "run"), *sets_args(tiny())), "cannot create run directory")


def finished_run(cli_here, tmp_path, tiny, name="run", **extra) -> Path:
    """A finished tiny run to refuse things with (trained in this process: setup, not under test)."""
    run = tmp_path / name
    out = cli_here("train", "--run-dir", str(run), *sets_args(tiny(**extra)))
    assert out.returncode == 0, out.stderr
    return run


def test_resume_problems(cli, cli_here, tmp_path, tiny):
    run = finished_run(cli_here, tmp_path, tiny, train__steps=10)
    # a changed training setting is refused, naming the key
    clean_failure(cli_here("train", "--resume", str(run), "--set", "optim.lr=0.5"), "different config", "optim.lr")
    # same run dir again for a new run is refused
    clean_failure(cli_here("train", "--run-dir", str(run), *sets_args(tiny())), "--resume")
    # corrupt the newest checkpoint: it is reported and skipped, the previous one is used
    newest = ckpt.list_checkpoints(run / "checkpoints")[-1]
    weights = newest / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF
    weights.write_bytes(bytes(data))
    out = cli("train", "--resume", str(run))
    assert out.returncode == 0, out.stderr
    assert f"{newest.name} skipped" in out.stderr
    # no valid checkpoint at all
    for path in ckpt.list_checkpoints(run / "checkpoints"):
        (path / "manifest.json").unlink()
    clean_failure(cli_here("train", "--resume", str(run)), "no valid checkpoint")
    clean_failure(cli_here("train", "--resume", str(tmp_path / "nowhere")), "not a run directory")


def test_branch_with_a_model_that_does_not_fit(cli, cli_here, tmp_path, tiny):
    run = finished_run(cli_here, tmp_path, tiny, train__steps=5)
    step = ckpt.list_checkpoints(run / "checkpoints")[-1]
    clean_failure(cli_here("train", "--from", str(step), "--run-dir", str(tmp_path / "b"),
                      *sets_args(tiny(model__n_embd=48))), "shape", "model size or the data's vocabulary")
    # a different vocabulary (other text) does not fit either
    other = tmp_path / "other.txt"
    other.write_text("".join(chr(0x400 + i % 60) for i in range(5000)))
    clean_failure(cli_here("train", "--from", str(step), "--run-dir", str(tmp_path / "c"),
                      *sets_args(tiny(data__path=str(other), data__min_char_count=1))), "shape")
    # branching with changed optimizer settings works and continues from that step
    out = cli("train", "--from", str(step), "--run-dir", str(tmp_path / "d"),
              *sets_args(tiny(train__steps=8, optim__lr=1e-4)))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "d" / "checkpoints" / "step-8" / "model.safetensors").is_file()


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, tiny, monkeypatch):
    import trainwell.objectives as job_mod

    real = job_mod.OBJECTIVES["lm"]
    calls = {"n": 0}

    def poisoned(model, batch):
        calls["n"] += model.training  # evaluation calls do not count
        out = real(model, batch)
        if model.training and calls["n"] == 13:  # step 13 of a run checkpointing every 5
            out.loss = out.loss * math.nan
        return out

    monkeypatch.setitem(job_mod.OBJECTIVES, "lm", poisoned)
    # (without the memory check: its simulated step calls the objective too, which would move the count)
    cfg = load_config("default", tiny(train__memory_check=False))
    run = tmp_path / "nan"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(TrainingDiverged, match=r"loss became nan at step 13.*step-10"):
        train(cfg, run_dir=run)
    names = [p.name for p in ckpt.list_checkpoints(run / "checkpoints")]
    assert names[-1] == "step-10"
    ckpt.verify(run / "checkpoints" / "step-10")


def test_disk_full_while_saving(tmp_path, tiny, monkeypatch):
    import trainwell.checkpoint.store as store

    real_write = store.write
    calls = {"n": 0}

    def full_disk(staged, ckpt_dir, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            # what a full disk looks like from inside the writer
            monkeypatch.setattr(store.os, "fsync", lambda fd: (_ for _ in ()).throw(
                OSError(errno.ENOSPC, "No space left on device")))
        try:
            return real_write(staged, ckpt_dir, **kw)
        finally:
            monkeypatch.undo()
            monkeypatch.setattr(store, "write", full_disk)

    monkeypatch.setattr(store, "write", full_disk)
    cfg = load_config("default", tiny())
    run = tmp_path / "full"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(CheckpointError, match="No space left on device"):
        train(cfg, run_dir=run)
    names = [p.name for p in (run / "checkpoints").iterdir()]
    assert names == ["step-5"], names  # the good one survives; no half-written step-10, no temp dir
    ckpt.verify(run / "checkpoints" / "step-5")
