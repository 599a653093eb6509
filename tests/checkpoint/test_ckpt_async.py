"""AsyncSaver: same bytes as save(), errors surface on wait(), snapshots taken at save()."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest
import torch
from ckpt_helpers import Box, assert_same, make_run, train_steps

from trainwell import checkpoint as ckpt
from trainwell.errors import CheckpointError


def _files(ckpt_dir: Path) -> dict[str, object]:
    return json.loads((ckpt_dir / "manifest.json").read_text())["files"]


def test_async_writes_same_bytes_as_save(tmp_path: Path) -> None:
    model, opt = make_run(0)
    train_steps(model, opt, 2)
    state = {"model": model, "optimizer": opt, "loop": Box({"step": 2})}
    ckpt.save(tmp_path / "sync" / "step-2", state, step=2, meta={"val_loss": 1.0})
    with ckpt.AsyncSaver() as saver:
        saver.save(tmp_path / "async" / "step-2", state, step=2, meta={"val_loss": 1.0})
        # Training continues while the write runs; the checkpoint must not see it.
        train_steps(model, opt, 1)
        assert saver.wait() == tmp_path / "async" / "step-2"
        assert saver.wait() is None  # nothing pending any more
    assert _files(tmp_path / "sync" / "step-2") == _files(tmp_path / "async" / "step-2")
    ckpt.verify(tmp_path / "async" / "step-2")


def test_async_error_is_raised_on_wait_and_next_save_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def enospc(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    saver = ckpt.AsyncSaver()
    monkeypatch.setattr(os, "fsync", enospc)
    saver.save(tmp_path / "step-1", {"loop": Box({"step": 1})}, step=1)
    with pytest.raises(CheckpointError, match="No space left on device"):
        saver.wait()
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []
    # The failure was consumed by wait(); the saver is usable again.
    saver.save(tmp_path / "step-2", {"loop": Box({"step": 2})}, step=2)
    saver.close()
    assert ckpt.load_entry(tmp_path / "step-2", "loop") == {"step": 2}


def test_async_save_waits_for_previous_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def enospc(fd: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with ckpt.AsyncSaver() as saver:
        monkeypatch.setattr(os, "fsync", enospc)
        saver.save(tmp_path / "step-1", {"loop": Box({})}, step=1)
        with pytest.raises(CheckpointError):
            saver.save(tmp_path / "step-2", {"loop": Box({})}, step=2)  # reports step-1's failure
        monkeypatch.undo()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_state_and_rng_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 4).cuda().to(torch.bfloat16)
    saver = ckpt.AsyncSaver()
    saver.save(tmp_path / "step-1", {"model": model, "rng": ckpt.RNGState()}, step=1)
    with torch.no_grad():
        model.weight.add_(1)  # must not reach the staged CPU copy
    saver.close()
    expected = torch.rand(4, device="cuda")
    torch.cuda.manual_seed_all(99)
    model2 = torch.nn.Linear(4, 4).cuda().to(torch.bfloat16)
    ckpt.load(tmp_path / "step-1", {"model": model2, "rng": ckpt.RNGState()})
    assert_same(torch.rand(4, device="cuda"), expected)
    assert model2.weight.device.type == "cuda"
    entry = ckpt.load_entry(tmp_path / "step-1", "model")
    assert entry["weight"].device.type == "cpu"
    assert torch.equal(entry["weight"].cuda(), model.weight - 1)
