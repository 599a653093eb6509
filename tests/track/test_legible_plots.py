"""Every plot of a tiny run of each paradigm, checked as drawn: no overlapping tick labels (text
extents from the renderer), axis labels and a title present, the paradigm's unit on the x axis
with optimizer steps on top, smoothing over a faint raw curve, decade-only log axes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

import figcheck  # noqa: E402  (tests/ is on sys.path)
from trainwell.track.axes import decade_label, spans_decades, tick_labels  # noqa: E402
from trainwell.track.metrics import MetricsJSONL, read_metrics  # noqa: E402
from trainwell.track.plots import draw_plots  # noqa: E402
from trainwell.track.xunit import x_unit  # noqa: E402

CURVES = {"loss.png", "lr.png", "throughput.png", "grad_norm.png"}
# paradigm -> (x unit of its curves, the figures it draws besides CURVES)
EXPECTED = {
    "gpt": ("tokens", set()),
    "mlm": ("tokens", set()),
    "cnn": ("epoch", {"confusion.png", "misclassified.png"}),
    "mlp": ("epoch", set()),
    "simclr": ("samples", {"embedding.png", "clusters.png"}),  # 6 steps: less than one epoch
    "flow": ("epoch", {"samples.png"}),
    "ppo": ("env steps", {"return.png"}),
    "dqn": ("env steps", {"return.png"}),
}


def unit_total(run_dir: Path, unit: str) -> float:
    """The run's length in ``unit`` from what the engine itself counted (summary.json)."""
    s = json.loads((run_dir / "summary.json").read_text())
    if unit == "epoch":  # the flow trains on the fit part of the train split only
        return s["samples_seen"] / s.get("fit_samples", s["data"]["train"])
    return {"tokens": s.get("tokens_seen"), "env steps": s.get("env_steps"), "samples": s.get("samples_seen")}[unit]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_every_plot_of_each_paradigm_is_legible(paradigm_run, name):
    run = paradigm_run(name)
    unit, extra = EXPECTED[name]
    assert set(run.figures) == CURVES | extra
    for png, fig in run.figures.items():
        assert (run.run_dir / "plots" / png).is_file()
        assert figcheck.problems(fig) == [], png

    table = x_unit(run.run_dir, read_metrics(run.run_dir / "metrics.jsonl"))
    total = unit_total(run.run_dir, unit)
    for png in sorted(CURVES | (extra & {"return.png"})):
        ax = run.figures[png].axes[0]
        assert ax.get_xlabel() == unit, png
        (top,) = ax.child_axes
        assert top.get_xlabel() == "optimizer step", png
        # the curves end at the run's total in that unit, as the engine counted it
        assert max(max(line.get_xdata()) for line in ax.get_lines()) == pytest.approx(total, rel=1e-9), png
        # each optimizer-step tick on top sits where that step is in the unit below
        ticks = figcheck.tick_labels(top.xaxis)
        assert len(ticks) >= 2, png
        for label in ticks:
            assert table.at(float(label.get_text())) == pytest.approx(label.get_position()[0]), png


def test_raw_curve_faint_behind_its_smoothed_trend(paradigm_run):
    ax = paradigm_run("gpt").figures["loss.png"].axes[0]  # 30 logged train losses
    lines = {line.get_label(): line for line in ax.get_lines()}
    smooth = lines["train/loss (smoothed)"]
    raw = [line for line in ax.get_lines() if line.get_alpha() is not None and line.get_alpha() < 0.5]
    assert len(raw) == 1 and raw[0].get_color() == smooth.get_color()
    assert len(raw[0].get_ydata()) == len(smooth.get_ydata()) == 30
    assert list(raw[0].get_ydata()) != list(smooth.get_ydata())
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train/loss (smoothed)", "val/loss"]


def _synthetic(run_dir: Path, loss) -> None:
    with MetricsJSONL(run_dir / "metrics.jsonl") as sink:
        for s in range(1, 2001):
            sink.log(s, {"train/loss": loss(s)})


def _recorded(run_dir: Path) -> dict:
    import paradigms

    figures: dict = {}
    with paradigms.recording_figures(figures):
        draw_plots(run_dir)
    return figures


def test_long_log_axis_labels_decades_only(tmp_path):
    # digits_cnn's shape: 2.3 falling to 0.01; matplotlib's default labelled every minor tick
    _synthetic(tmp_path, lambda s: 2.3 * math.exp(-s / 300) + 0.008 * (1 + 0.3 * math.sin(s)))
    fig = _recorded(tmp_path)["loss.png"]
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"
    fig.canvas.draw()
    labels = [t.get_text() for t in figcheck.tick_labels(ax.yaxis)]
    assert labels == ["0.01", "0.1", "1"]
    assert figcheck.overlaps(fig) == []


def test_short_range_stays_linear_with_distinct_labels(tmp_path):
    _synthetic(tmp_path, lambda s: 3.0 - 0.4 * s / 2000 + 0.01 * math.sin(s))
    fig = _recorded(tmp_path)["loss.png"]
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear"
    fig.canvas.draw()
    labels = [t.get_text() for t in figcheck.tick_labels(ax.yaxis)]
    assert len(labels) >= 3 and len(set(labels)) == len(labels)
    assert ax.get_xlabel() == "optimizer step" and not ax.child_axes  # no config: steps, no second axis


def test_the_overlap_check_catches_labelled_minor_log_ticks():
    """The check is not vacuous: matplotlib's own labels for a short log range overprint."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.plot(range(100), [2.3 * 0.95 ** s + 0.05 for s in range(100)])  # 2.35 down to 0.06
    ax.set_yscale("log")
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")  # what plots.py did before
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    assert figcheck.overlaps(fig)


def test_tick_label_text():
    assert tick_labels([0, 0.25, 0.5, 0.75]) == ["0", "0.25", "0.50", "0.75"]
    assert tick_labels([0, 20_000, 40_000]) == ["0", "20k", "40k"]
    assert tick_labels([1_000_000, 1_500_000]) == ["1.0M", "1.5M"]
    assert tick_labels([0, 2e-5, 4e-5]) == ["0", "2e-5", "4e-5"]
    assert tick_labels([2.9801, 2.9802]) == ["2.9801", "2.9802"]  # never two equal labels
    assert [decade_label(v) for v in (1e-4, 0.01, 1, 100, 1e5)] == ["1e-4", "0.01", "1", "100", "100k"]
    assert spans_decades([0.05, 2.0]) and not spans_decades([0.15, 2.0]) and not spans_decades([-1, 100])
