"""summarize/render_summary read a run dir back correctly."""

import io
import re
import json
from pathlib import Path

import pytest

from trainwell.track.meta import write_json
from trainwell.track.metrics import MetricsJSONL
from trainwell.track.report import render_summary, summarize


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    run = tmp_path / "tiny-gpt"
    val = {10: 3.0, 20: 2.5, 30: 2.1, 40: 2.3, 50: 2.1}  # best 2.1 first reached at 30
    with MetricsJSONL(run / "metrics.jsonl") as sink:
        for s in range(1, 51):
            sink.log(s, {"train/loss": 10.0 - 0.1 * s, "train/tokens_per_s":
                         1000.0 if s == 1 else 20_000.0})
            if s in val:
                sink.log(s, {"val/loss": val[s]})
    for s in (10, 50, 9, 100):
        (run / "checkpoints" / f"step-{s}").mkdir(parents=True)
    (run / "checkpoints" / "step-7.tmp").mkdir()  # an interrupted save: not a checkpoint
    write_json(run / "meta.json", {"seed": 1234, "git": {"commit": "a" * 40, "dirty": True}})
    write_json(run / "summary.json", {"wall_time_s": 192.0})
    return run


def test_summarize(run_dir: Path) -> None:
    s = summarize(run_dir)
    assert s["steps"] == 50
    assert (s["best_val_loss"], s["best_val_step"]) == (2.1, 30)
    assert (s["last_val_loss"], s["last_val_step"]) == (2.1, 50)
    assert s["final_train_loss"] == pytest.approx(10.0 - 0.1 * 48)  # mean of steps 46..50
    assert s["tokens_per_s"] == pytest.approx(20_000.0)  # warm-up window excluded
    assert s["wall_time_s"] == 192.0
    assert s["checkpoints"] == ["step-9", "step-10", "step-50", "step-100"]
    assert s["seed"] == 1234 and s["commit"] == "a" * 12 + "-dirty"


def test_summarize_empty_run(tmp_path: Path) -> None:
    s = summarize(tmp_path)
    assert s["steps"] == 0 and s["best_val_loss"] is None and s["checkpoints"] == []
    render_summary(s, stream=io.StringIO())  # must not crash on missing values


def test_render_plain_when_not_a_tty(run_dir: Path) -> None:
    out = io.StringIO()
    render_summary(summarize(run_dir), stream=out)
    text = out.getvalue()
    assert "\x1b[" not in text
    assert "best val loss" in text and "2.1 @ step 30" in text
    assert "20.0k tok/s" in text and "3m12s" in text


def test_write_json_is_strict_and_atomic(tmp_path: Path) -> None:
    path = tmp_path / "meta.json"
    write_json(path, {"loss": float("nan"), "nested": [float("inf"), 1.5], "p": tmp_path})
    obj = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(c))
    assert obj == {"loss": None, "nested": [None, 1.5], "p": str(tmp_path)}
    assert not (tmp_path / "meta.json.tmp").exists()


def test_render_accepts_engine_summary_shape() -> None:
    # The engine's summary.json uses its own keys; rendering it must still read well.
    out = io.StringIO()
    render_summary({"steps": 200, "val/loss": 1.23456, "best_val_loss": 1.2, "best_step": 150,
                    "wall_seconds": 75.0, "tokens_per_s": 12_345.0, "facts": {"params": 10}},
                   stream=out)
    text = out.getvalue()
    assert "1.2 @ step 150" in text and "1m15s" in text and "12.3k tok/s" in text
    assert re.search(r"^val/loss\s+1\.235$", text, re.M)
    assert "None" not in text
