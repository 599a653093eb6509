"""save / load / verify / housekeeping of checkpoint directories."""

from __future__ import annotations

import errno
import json
import os
import pickle
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import safetensors.torch
import torch
from ckpt_helpers import Box, TinyLM, assert_same, make_run, train_steps

from trainwell import checkpoint as ckpt
from trainwell.errors import CheckpointError


def app_state(model: torch.nn.Module, opt: torch.optim.Optimizer) -> dict[str, ckpt.Stateful]:
    return {"model": model, "optimizer": opt, "rng": ckpt.RNGState(), "loop": Box({"step": 2})}


def save_trained(root: Path, step: int = 2, **meta: object) -> Path:
    model, opt = make_run(0)
    train_steps(model, opt, 2)
    return ckpt.save(root / f"step-{step}", app_state(model, opt), step=step, meta=dict(meta))


# --------------------------------------------------------------------------- round trip


def test_round_trip_is_bit_exact_and_training_continues_identically(tmp_path: Path) -> None:
    model, opt = make_run(0)
    train_steps(model, opt, 2)
    torch.manual_seed(7), random.seed(7), np.random.seed(7)
    saved = ckpt.save(tmp_path / "step-2", app_state(model, opt), step=2, meta={"val_loss": 1.5})
    expected_draws = (random.random(), np.random.rand(), torch.rand(3))

    model2, opt2 = make_run(1)  # different init: everything must come from the checkpoint
    loop = Box()
    manifest = ckpt.load(saved, {"model": model2, "optimizer": opt2, "rng": ckpt.RNGState(), "loop": loop})

    assert manifest["step"] == 2 and manifest["meta"] == {"val_loss": 1.5}
    assert_same(model.state_dict(), model2.state_dict())
    assert_same(opt.state_dict(), opt2.state_dict())  # int keys, tuple betas, step tensors
    assert model2.scale.dtype == torch.bfloat16
    assert model2.lm_head.weight is model2.tok_emb.weight  # still tied after load
    assert loop.state == {"step": 2}
    assert_same((random.random(), np.random.rand(), torch.rand(3)), expected_draws)

    # The real test of "resume exactly": one more step on each gives identical weights.
    train_steps(model, opt, 1)
    train_steps(model2, opt2, 1)
    assert_same(model.state_dict(), model2.state_dict())


def test_tied_weight_is_stored_once_and_model_file_is_plain_safetensors(tmp_path: Path) -> None:
    model, opt = make_run(0)
    saved = ckpt.save(tmp_path / "step-1", {"model": model, "optimizer": opt}, step=1)

    # The public contract: safetensors alone reads it, with the model's own keys.
    tensors = safetensors.torch.load_file(saved / "model.safetensors")
    sd = model.state_dict()
    assert set(tensors) == set(sd) - {"lm_head.weight"}
    for k, v in tensors.items():
        assert v.dtype == sd[k].dtype and torch.equal(v, sd[k]), k
    with safetensors.safe_open(saved / "model.safetensors", framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
    aliases = json.loads((saved / "state.json").read_text())["entries"]["model"]["aliases"]
    assert aliases == {"lm_head.weight": "tok_emb.weight"}

    entry = ckpt.load_entry(saved, "model")
    assert list(entry) == list(sd)
    assert entry["lm_head.weight"] is entry["tok_emb.weight"]
    assert entry["t_buf"].is_contiguous() and torch.equal(entry["t_buf"], sd["t_buf"])


def test_format_edge_cases_round_trip(tmp_path: Path) -> None:
    state = {
        "ints": {0: 1, 5: [2, 3]},
        "mixed": {1: "a", "b": 2, None: True},
        "marker_named": {"__tensor__": "not a reference"},
        "tuple": (1, (2.5, "x"), []),
        "floats": [float("nan"), float("inf"), -float("inf"), -0.0, 1e-300],
        "tensors": [torch.arange(3, dtype=torch.int64), torch.tensor([True, False]), torch.empty(0, 2)],
        "bytes": torch.tensor([0, 255], dtype=torch.uint8),
        "empty": {},
        "big": 2**62 + 1,
    }
    ckpt.save(tmp_path / "step-0", {"data": Box(state)}, step=0)
    text = (tmp_path / "step-0" / "state.json").read_text()
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    restored = Box()
    ckpt.load(tmp_path / "step-0", {"data": restored})
    assert_same(state, restored.state)


def test_unsupported_value_names_entry_and_path(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"'data'.*'cursor/seen'.*state_dict\(\)"):
        ckpt.save(tmp_path / "step-0", {"data": Box({"cursor": {"seen": {1, 2}}})}, step=0)
    assert list(tmp_path.iterdir()) == []


def test_load_never_unpickles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    saved = save_trained(tmp_path)

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("checkpoint loading must not unpickle")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    model, opt = make_run(1)
    ckpt.load(saved, app_state(model, opt))
    assert {p.name for p in saved.iterdir()} == {
        "model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json", "manifest.json"
    }


def test_strict_missing_entry(tmp_path: Path) -> None:
    saved = ckpt.save(tmp_path / "step-1", {"loop": Box({"step": 1})}, step=1)
    with pytest.raises(CheckpointError, match=r"no entry for 'scaler'.*strict=False"):
        ckpt.load(saved, {"loop": Box(), "scaler": Box()})
    loop, scaler = Box(), Box("untouched")
    ckpt.load(saved, {"loop": loop, "scaler": scaler}, strict=False)
    assert loop.state == {"step": 1} and scaler.state == "untouched"


def test_mismatched_model_is_a_checkpoint_error(tmp_path: Path) -> None:
    saved = ckpt.save(tmp_path / "step-1", {"model": torch.nn.Linear(2, 3)}, step=1)
    with pytest.raises(CheckpointError, match="entry 'model' does not fit"):
        ckpt.load(saved, {"model": torch.nn.Linear(2, 4)})


# --------------------------------------------------------------------------- verify


def _flip_byte(p: Path) -> None:
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0x01
    p.write_bytes(bytes(data))


def _truncate(p: Path) -> None:
    p.write_bytes(p.read_bytes()[:-3])


@pytest.mark.parametrize(
    ("damage", "target", "message"),
    [
        (_flip_byte, "optimizer.safetensors", "optimizer.safetensors fails its sha256 check"),
        (_flip_byte, "state.json", "state.json fails its sha256 check"),
        (_truncate, "model.safetensors", "model.safetensors is .* bytes but the manifest says"),
        (Path.unlink, "model.safetensors", "model.safetensors is missing"),
        (Path.unlink, "manifest.json", "has no manifest.json"),
        (lambda p: p.write_text("{not json"), "manifest.json", "manifest.json cannot be read"),
    ],
)
def test_verify_catches_damage(tmp_path: Path, damage, target: str, message: str) -> None:
    saved = save_trained(tmp_path)
    assert ckpt.verify(saved)["step"] == 2
    damage(saved / target)
    with pytest.raises(CheckpointError, match=message):
        ckpt.verify(saved)
    with pytest.raises(CheckpointError):
        model, opt = make_run(1)
        ckpt.load(saved, app_state(model, opt))


def test_latest_valid_skips_corrupt_newest(tmp_path: Path) -> None:
    good = save_trained(tmp_path, step=2)
    bad = save_trained(tmp_path, step=4)
    _flip_byte(bad / "model.safetensors")
    path, skipped = ckpt.latest_valid(tmp_path)
    assert path == good
    assert len(skipped) == 1 and skipped[0][0] == bad and "sha256" in skipped[0][1]
    assert ckpt.latest_valid(tmp_path / "nothing-here") == (None, [])


# --------------------------------------------------------------------------- atomicity


def _enospc(*args: object, **kwargs: object) -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("where", ["fsync", "safetensors"])
def test_failed_write_leaves_nothing_and_keeps_previous(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str
) -> None:
    root = tmp_path / "checkpoints"
    first = save_trained(root, step=1)
    if where == "fsync":
        monkeypatch.setattr(os, "fsync", _enospc)
    else:  # the write of optimizer.safetensors fails after model.safetensors was written
        real = safetensors.torch.save_file

        def fail_on_optimizer(tensors, filename, metadata=None):  # type: ignore[no-untyped-def]
            if Path(filename).name == "optimizer.safetensors":
                # What safetensors really raises on a full disk: not an OSError.
                raise safetensors.SafetensorError(
                    f"Error while serializing: I/O error: No space left on device (os error 28) "
                    f'at path "{filename}"'
                )
            return real(tensors, filename, metadata=metadata)

        monkeypatch.setattr(safetensors.torch, "save_file", fail_on_optimizer)
    with pytest.raises(CheckpointError) as info:
        save_trained(root, step=2)
    msg = str(info.value)
    assert str(root / "step-2") in msg and "No space left on device" in msg and "untouched" in msg
    assert "free disk space" in msg
    monkeypatch.undo()
    assert [p.name for p in root.iterdir()] == ["step-1"]  # no step-2, no .tmp-*
    ckpt.verify(first)


def test_overwrite_existing_checkpoint_dir(tmp_path: Path) -> None:
    target = tmp_path / "step-3"
    ckpt.save(target, {"loop": Box({"v": 1})}, step=3)
    ckpt.save(target, {"loop": Box({"v": 2})}, step=3)
    assert ckpt.load_entry(target, "loop") == {"v": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["step-3"]


def test_parent_is_a_regular_file(tmp_path: Path) -> None:
    (tmp_path / "checkpoints").write_text("oops")
    with pytest.raises(CheckpointError, match=r"could not write checkpoint .*checkpoints/step-1: .*checkpoints is a file, not a directory.*untouched"):
        ckpt.save(tmp_path / "checkpoints" / "step-1", {"loop": Box({})}, step=1)


def test_non_json_meta_is_rejected_before_writing(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not JSON-serialisable"):
        ckpt.save(tmp_path / "step-1", {"loop": Box({})}, step=1, meta={"path": tmp_path})
    assert list(tmp_path.iterdir()) == []


def test_stage_is_a_snapshot(tmp_path: Path) -> None:
    model, opt = make_run(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    staged = ckpt.stage({"model": model})
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)  # training keeps going while phase 2 writes
    ckpt.write(staged, tmp_path / "step-1", step=1)
    assert_same(ckpt.load_entry(tmp_path / "step-1", "model"), before)


# --------------------------------------------------------------------------- housekeeping


def test_list_checkpoints_sorts_numerically_and_ignores_others(tmp_path: Path) -> None:
    for name in ["step-10", "step-9", "step-100", ".tmp-step-11-1-abcdef01", "best", "step-x"]:
        (tmp_path / name).mkdir()
    (tmp_path / "step-7").write_text("a file, not a checkpoint")
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-9", "step-10", "step-100"]


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    return int(proc.stdout)


def test_prune_keeps_last_and_best_and_sweeps_stale_tmp(tmp_path: Path) -> None:
    losses = {1: 3.0, 2: 0.5, 3: 2.0, 4: 1.0, 5: float("nan"), 6: 1.5}
    for step, loss in losses.items():
        ckpt.save(tmp_path / f"step-{step}", {"loop": Box({"s": step})}, step=step, meta={"val_loss": loss})
    stale = tmp_path / f".tmp-step-7-{_dead_pid()}-0123abcd"
    live = tmp_path / f".tmp-step-8-{os.getpid()}-0123abcd"  # e.g. an AsyncSaver write in flight
    stale.mkdir(), live.mkdir()

    deleted = ckpt.prune(tmp_path, keep_last=2)
    assert sorted(p.name for p in deleted) == ["step-1", "step-3", "step-4"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name, "step-2", "step-5", "step-6"]

    assert [p.name for p in ckpt.prune(tmp_path, keep_last=1, keep_best=False)] == ["step-2", "step-5"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["step-6"]


def test_prune_never_counts_a_damaged_newest(tmp_path: Path) -> None:
    for step in (1, 2):
        ckpt.save(tmp_path / f"step-{step}", {"loop": Box({"s": step})}, step=step)
    (tmp_path / "step-2" / "manifest.json").unlink()
    assert ckpt.prune(tmp_path, keep_last=1) == []  # step-1 is the last good one
    with pytest.raises(ValueError):
        ckpt.prune(tmp_path, keep_last=0)


def test_model_with_only_buffers_and_no_tensors_entry(tmp_path: Path) -> None:
    # An entry without tensors gets no .safetensors file and still round-trips.
    saved = ckpt.save(tmp_path / "step-0", {"loop": Box({"step": 0}), "model": TinyLM()}, step=0)
    assert not (saved / "loop.safetensors").exists()
    assert json.loads((saved / "manifest.json").read_text())["entries"] == ["loop", "model"]


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to map fds to paths")
def test_every_file_and_both_directories_are_fsynced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")).name)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    model, opt = make_run(0)
    train_steps(model, opt, 1)  # so the optimizer has tensor state
    ckpt.save(tmp_path / "ckpts" / "step-1", {"model": model, "optimizer": opt}, step=1)
    files = ["model.safetensors", "optimizer.safetensors", "state.json", "manifest.json"]
    assert synced[:4] == files  # manifest last: it marks the directory complete
    assert synced[4].startswith(".tmp-step-1-") and synced[5] == "ckpts"
