"""The in-process Trainer: build once, train in pieces, end exactly where one call ends."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import trainwell
from trainwell.checkpoint import store


def newest(run_dir, entry):
    steps = sorted(run_dir.glob("checkpoints/step-*"), key=lambda p: int(p.name.split("-")[1]))
    return load_file(steps[-1] / f"{entry}.safetensors")


def bitwise_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].contiguous().view(-1).numpy().tobytes() ==
        b[k].contiguous().view(-1).numpy().tobytes() for k in a)


def rows(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "time" and "per_s" not in k and "mfu" not in k}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("pieces", [[10, 10], [3, 7, 10], [1, 19]])
def test_fit_in_pieces_is_bit_identical_to_one_fit(tmp_path, tiny, pieces):
    # dropout draws from the RNG streams, grad_accum splits steps into micro-batches, evaluation
    # and checkpoints fall inside and at the edges of the pieces
    sets = tiny(train__steps=20, model__dropout=0.1, train__grad_accum=2, eval__every=5, checkpoint__every=4)
    with trainwell.trainer("default", sets, run_dir=tmp_path / "whole") as t:
        last = t.fit(20)
        whole = t.finish()
    with trainwell.trainer("default", sets, run_dir=tmp_path / "pieces") as t:
        done = 0
        for n in pieces:
            assert t.fit(n)["train/loss"] > 0
            done += n
            assert t.loop.step == done
        assert t.fit() == {}  # nothing left to train
        split = t.finish()
    assert whole.summary["steps"] == split.summary["steps"] == 20
    assert last["train/loss"] == [r for r in rows(whole.run_dir) if "train/loss" in r][-1]["train/loss"]
    for entry in ("model", "optimizer"):
        assert bitwise_equal(newest(whole.run_dir, entry), newest(split.run_dir, entry)), entry
    assert rows(whole.run_dir) == rows(split.run_dir)  # same losses, evaluations and steps logged
    assert whole.summary["val_loss"] == split.summary["val_loss"]
    assert whole.samples == split.samples


def test_trainer_exposes_the_model_and_keeps_optimizer_state_between_fits(tmp_path, tiny):
    with trainwell.trainer("default", tiny(train__steps=6), run_dir=tmp_path / "r") as t:
        t.fit(2)
        state = {k: v.clone() for k, v in t.optimizer.state[next(t.model.parameters())].items()}
        assert int(state["step"]) == 2
        t.fit(1)
        assert int(t.optimizer.state[next(t.model.parameters())]["step"]) == 3
        # a caller (e.g. a federated client) may replace the weights between fits
        with torch.no_grad():
            for p in t.model.parameters():
                p.zero_()
        t.fit(1)
        assert any(float(p.detach().abs().sum()) > 0 for p in t.model.parameters())
        t.finish()


def test_resume_hashes_each_checkpoint_file_once(tmp_path, tiny, monkeypatch):
    run = trainwell.train("default", tiny(train__steps=10, checkpoint__every=5), run_dir=tmp_path / "r").run_dir
    seen: list[str] = []
    real = store._check_file
    monkeypatch.setattr(store, "_check_file", lambda d, name, exp: (seen.append(f"{d.name}/{name}"), real(d, name, exp)))
    import hashlib

    reads: list[str] = []
    real_digest = hashlib.file_digest
    monkeypatch.setattr(hashlib, "file_digest", lambda f, alg: (reads.append(getattr(f, "name", "?")), real_digest(f, alg))[1])
    res = trainwell.train("default", tiny(train__steps=10, checkpoint__every=5), resume=run)
    assert res.summary["steps"] == 10
    picked = [s for s in seen if s.startswith("step-10/")]
    assert sorted(picked) == sorted(set(picked)), picked  # every file of the resumed checkpoint once
    assert {"step-10/model.safetensors", "step-10/optimizer.safetensors", "step-10/state.json"} <= set(picked)
    model_hashes = [r for r in reads if r.endswith("step-10/model.safetensors")]
    assert len(model_hashes) == 1, model_hashes
