"""draw_plots writes one valid PNG per metric group present, nothing for empty metrics."""

import math
import struct
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from trainwell.track.metrics import MetricsJSONL  # noqa: E402
from trainwell.track.plots import draw_plots  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path.name} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def _write(run_dir: Path, steps: int, keys: dict) -> None:
    with MetricsJSONL(run_dir / "metrics.jsonl") as sink:
        for s in range(1, steps + 1):
            sink.log(s, {k: f(s) for k, f in keys.items()})
            if s % 20 == 0:
                sink.log(s, {"val/loss": 4.0 / math.sqrt(s)})


def test_all_plots_written(tmp_path: Path) -> None:
    _write(tmp_path, 120, {
        "train/loss": lambda s: 5.0 / math.sqrt(s) + 0.1 * math.sin(s),
        "train/lr": lambda s: 3e-3 * min(1.0, s / 10),
        "train/tokens_per_s": lambda s: 20_000.0 + s,
        "train/grad_norm": lambda s: math.nan if s == 50 else 1.0 / s,
    })
    written = draw_plots(tmp_path)
    names = sorted(p.name for p in written)
    assert names == ["grad_norm.png", "loss.png", "lr.png", "throughput.png"]
    for path in written:
        assert path.parent == tmp_path / "plots"
        width, height = _png_size(path)
        assert width >= 400 and height >= 300
        assert path.stat().st_size > 10_000, f"{path.name} looks blank"
    assert not list((tmp_path / "plots").glob("*.tmp"))


def test_absent_keys_are_skipped_and_samples_rate_used(tmp_path: Path) -> None:
    _write(tmp_path, 10, {"train/loss": lambda s: 1.0 / s,
                          "train/samples_per_s": lambda s: 300.0})
    names = sorted(p.name for p in draw_plots(tmp_path))
    assert names == ["loss.png", "throughput.png"]
    assert not (tmp_path / "plots" / "lr.png").exists()


def test_empty_metrics_write_nothing(tmp_path: Path) -> None:
    (tmp_path / "metrics.jsonl").write_text("")
    assert draw_plots(tmp_path) == []
    assert not (tmp_path / "plots").exists()
    assert draw_plots(tmp_path / "missing") == []
