"""metrics.jsonl: round trip, resume truncation, NaN handling."""

import json
import math
from pathlib import Path

import pytest

from trainwell.track.metrics import MetricsJSONL
from trainwell.track.metrics import read_metrics as read_with_time


def read_metrics(path):
    """Records without the wall-clock 'time' field (checked once in test_time_is_recorded)."""
    out = read_with_time(path)
    for r in out:
        r.pop("time", None)  # hand-written lines in some tests have none
    return out


def test_time_is_recorded(tmp_path: Path) -> None:
    import time

    path = tmp_path / "metrics.jsonl"
    with MetricsJSONL(path) as sink:
        sink.log(1, {"a": 1.0})
    (rec,) = read_with_time(path)
    assert abs(rec["time"] - time.time()) < 60


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "run" / "metrics.jsonl"
    with MetricsJSONL(path) as sink:
        sink.log(1, {"train/loss": 2.5, "train/lr": 1e-3})
        sink.log(2, {"train/loss": 2.25, "tokens": 512})
        sink.log(2, {"val/loss": 2.4})
    assert read_metrics(path) == [
        {"step": 1, "train/loss": 2.5, "train/lr": 1e-3},
        {"step": 2, "train/loss": 2.25, "tokens": 512},
        {"step": 2, "val/loss": 2.4},
    ]


def test_each_line_is_flushed_before_close(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    sink = MetricsJSONL(path)
    sink.log(7, {"train/loss": 1.0})
    # Another reader (plots, a crash) must see the line without close().
    assert read_metrics(path) == [{"step": 7, "train/loss": 1.0}]
    sink.close()


def test_append_without_resume_keeps_history(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsJSONL(path) as sink:
        sink.log(1, {"a": 1.0})
    with MetricsJSONL(path) as sink:
        sink.log(2, {"a": 2.0})
    assert [r["step"] for r in read_metrics(path)] == [1, 2]


def test_nan_and_inf_are_written_as_null_and_file_is_strict_json(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    with MetricsJSONL(path) as sink:
        sink.log(1, {"nan": math.nan, "inf": math.inf, "ninf": -math.inf, "ok": 0.5})
    line = path.read_text().strip()

    def reject(tok: str) -> float:
        raise AssertionError(f"non-standard JSON constant {tok}")

    obj = json.loads(line, parse_constant=reject)
    obj.pop("time")
    assert obj == {"step": 1, "nan": None, "inf": None, "ninf": None, "ok": 0.5}


def test_numpy_and_torch_scalars_are_accepted(tmp_path: Path) -> None:
    np = pytest.importorskip("numpy")
    path = tmp_path / "metrics.jsonl"
    with MetricsJSONL(path) as sink:
        sink.log(np.int64(3), {"a": np.float32(0.5), "b": np.float64("nan")})
    assert read_metrics(path) == [{"step": 3, "a": 0.5, "b": None}]


def test_non_numeric_metric_is_a_clear_error(tmp_path: Path) -> None:
    with MetricsJSONL(tmp_path / "m.jsonl") as sink, pytest.raises(TypeError, match="'note'"):
        sink.log(1, {"note": "hello"})


def _write_killed_run(path: Path) -> None:
    """Steps 1..8 logged, then killed mid-write of step 9 (no trailing newline)."""
    lines = [json.dumps({"step": s, "train/loss": 10.0 - s}) for s in range(1, 9)]
    path.write_text("\n".join(lines) + "\n" + '{"step": 9, "train/lo')


def test_read_tolerates_truncated_last_line(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write_killed_run(path)
    assert [r["step"] for r in read_metrics(path)] == list(range(1, 9))


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, \n{"step": 3}\n')
    with pytest.raises(ValueError, match="line 2"):
        read_metrics(path)


def test_resume_drops_steps_after_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "metrics.jsonl"
    _write_killed_run(path)
    # Resumed from the checkpoint at step 5: steps 6..8 (and the torn 9) will be redone.
    with MetricsJSONL(path, resume_step=5) as sink:
        assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
        sink.log(6, {"train/loss": 99.0})
    records = read_metrics(path)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[-1]["train/loss"] == 99.0
    assert not (tmp_path / "metrics.jsonl.tmp").exists()


def test_truncated_tail_is_repaired_before_plain_append(tmp_path: Path) -> None:
    # Without the repair, the next line would be glued onto the torn one, corrupting it.
    path = tmp_path / "metrics.jsonl"
    _write_killed_run(path)
    with MetricsJSONL(path) as sink:
        sink.log(9, {"train/loss": 1.0})
    assert [r["step"] for r in read_metrics(path)] == list(range(1, 10))


def test_read_missing_file_is_empty(tmp_path: Path) -> None:
    assert read_metrics(tmp_path / "nope.jsonl") == []
