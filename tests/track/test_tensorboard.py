"""TensorBoardSink writes event files that TensorBoard itself reads back."""

import math
from pathlib import Path

import pytest

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

from trainwell.track.tensorboard import TensorBoardSink  # noqa: E402


def _scalars(log_dir: Path, tag: str) -> list[tuple[int, float]]:
    acc = EventAccumulator(str(log_dir))
    acc.Reload()
    return [(e.step, e.value) for e in acc.Scalars(tag)]


def test_scalars_round_trip(tmp_path: Path) -> None:
    sink = TensorBoardSink(tmp_path)
    for step in range(1, 6):
        sink.log(step, {"train/loss": 3.0 / step, "train/lr": 1e-3 * step})
    sink.log(5, {"val/loss": 0.75})
    sink.close()

    assert list(tmp_path.glob("events.out.tfevents.*")), "no event file in the run dir"
    loss = _scalars(tmp_path, "train/loss")
    assert [s for s, _ in loss] == [1, 2, 3, 4, 5]
    assert [v for _, v in loss] == pytest.approx([3.0 / s for s in range(1, 6)], rel=1e-6)
    assert _scalars(tmp_path, "train/lr")[-1][1] == pytest.approx(5e-3, rel=1e-6)
    assert _scalars(tmp_path, "val/loss") == [(5, pytest.approx(0.75))]


def test_nan_is_recorded(tmp_path: Path) -> None:
    with_nan = TensorBoardSink(tmp_path)
    with_nan.log(1, {"train/loss": math.nan})
    with_nan.close()
    [(step, value)] = _scalars(tmp_path, "train/loss")
    assert step == 1 and math.isnan(value)


def test_purge_step_hides_steps_logged_after_the_checkpoint(tmp_path: Path) -> None:
    first = TensorBoardSink(tmp_path)
    for step in range(1, 9):  # killed after step 8; last checkpoint was step 5
        first.log(step, {"train/loss": 1.0})
    first.close()

    # Same meaning as MetricsJSONL(resume_step=5): keep steps <= 5, redo 6 onwards.
    resumed = TensorBoardSink(tmp_path, purge_step=5)
    for step in range(6, 8):
        resumed.log(step, {"train/loss": 2.0})
    resumed.close()

    assert _scalars(tmp_path, "train/loss") == [
        (1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0), (5, 1.0), (6, 2.0), (7, 2.0)
    ]
