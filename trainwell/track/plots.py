"""PNG curves in ``run_dir/plots/``: loss, learning rate, throughput, gradient norm, RL return.

Each is drawn against the run's natural unit (tokens, env steps or epochs: track/xunit.py) with
optimizer steps on a secondary axis on top, and readable ticks (track/axes.py).

matplotlib is imported inside ``draw_plots`` only (the CLI must start without it), and we
draw with the object-oriented API on an explicit Agg canvas instead of ``pyplot``: that
never touches matplotlib's global backend or figure registry, so calling this from a
notebook or a long-running process neither opens windows nor leaks figures.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trainwell.track.metrics import read_metrics
from trainwell.track.xunit import XUnit, x_unit

# (file stem, title, y label, metric keys drawn on the same axes; first present wins for
# throughput, whose two keys are alternatives rather than companions)
_PLOTS: list[tuple[str, str, str, tuple[str, ...]]] = [
    ("loss", "Loss", "loss", ("train/loss", "val/loss")),
    ("lr", "Learning rate", "learning rate", ("train/lr",)),
    ("throughput", "Throughput", "", ("train/tokens_per_s", "train/samples_per_s")),
    ("grad_norm", "Gradient norm (before clipping)", "grad norm", ("train/grad_norm",)),
    ("return", "Episodic return (training episodes; deterministic evaluation)", "return",
     ("rl/episode_return", "val/return")),
]
SMOOTH_MIN_POINTS = 20  # below this, raw points are readable on their own


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    """(steps, values) for one key; null (a non-finite value) is skipped, not drawn as 0."""
    xs: list[int] = []
    ys: list[float] = []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and "step" in r:
            xs.append(int(r["step"]))
            ys.append(float(v))
    return xs, ys


def ema(values: list[float], span: int) -> list[float]:
    """Exponential moving average (bias-corrected, like TensorBoard's smoothing)."""
    alpha = 2.0 / (span + 1)
    out: list[float] = []
    avg, weight = 0.0, 0.0
    for v in values:
        avg = (1 - alpha) * avg + alpha * v
        weight = (1 - alpha) * weight + alpha
        out.append(avg / weight)
    return out


def new_figure() -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def plot_curve(ax: Any, xs: Any, ys: list[float], label: str, *, smooth: bool, color: Any = None) -> None:
    """One metric: with enough points the raw values faint and their smoothed trend on top."""
    if smooth and len(ys) >= SMOOTH_MIN_POINTS:
        (raw,) = ax.plot(xs, ys, alpha=0.25, linewidth=0.8, color=color)
        ax.plot(xs, ema(ys, span=max(5, len(ys) // 50)), color=raw.get_color(), linewidth=1.8,
                label=f"{label} (smoothed)")
    else:
        ax.plot(xs, ys, marker="o" if len(ys) < 20 else None, markersize=3, linewidth=1.5,
                label=label, color=color)


def save_figure(fig: Any, path: Path) -> None:
    """Write-then-rename so a viewer never opens a half-written PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def _draw(path: Path, title: str, ylabel: str, curves: dict[str, tuple[list, list]], unit: XUnit,
          log_ok: bool, smooth: bool) -> None:
    from trainwell.track.axes import unit_axis, value_axis

    fig = new_figure()
    ax: Any = fig.add_subplot()
    for key, (steps, ys) in curves.items():
        plot_curve(ax, unit.at(steps), ys, key, smooth=smooth)
    all_steps = [s for steps, _ in curves.values() for s in steps]
    value_axis(ax, [y for _, ys in curves.values() for y in ys], log_ok=log_ok, from_zero=not log_ok)
    unit_axis(ax, unit, min(all_steps), max(all_steps))
    ax.set_title(title, pad=10)
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.4)
    ax.legend(loc="best")
    save_figure(fig, path)


def draw_plots(run_dir: Path) -> list[Path]:
    """Draw every plot whose metrics exist; return the PNG paths written ([] if none)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    unit = x_unit(run_dir, records)
    written: list[Path] = []
    for stem, title, ylabel, keys in _PLOTS:
        curves = {k: s for k in keys if (s := _series(records, k))[1]}
        if not curves:
            continue
        if stem == "throughput":
            key = next(iter(curves))  # tokens/s preferred over samples/s
            curves = {key: curves[key]}
            ylabel = "tokens / s" if key.endswith("tokens_per_s") else "samples / s"
        out = run_dir / "plots" / f"{stem}.png"
        # Log scale helps loss and grad-norm; lr and throughput read better linear. The lr
        # schedule is exact, not noisy, so smoothing it would only distort warm-up.
        _draw(out, f"{title} — {run_dir.name}", ylabel, curves, unit,
              log_ok=stem in ("loss", "grad_norm"), smooth=stem != "lr")
        written.append(out)
    return written
