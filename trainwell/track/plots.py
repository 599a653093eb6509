"""PNG curves in ``run_dir/plots/``: loss, learning rate, throughput, gradient norm, RL return.

matplotlib is imported inside ``draw_plots`` only (the CLI must start without it), and we
draw with the object-oriented API on an explicit Agg canvas instead of ``pyplot``: that
never touches matplotlib's global backend or figure registry, so calling this from a
notebook or a long-running process neither opens windows nor leaks figures.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from trainwell.track.metrics import read_metrics

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
_SMOOTH_MIN_POINTS = 50  # below this, raw points are readable on their own


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


def _ema(values: list[float], span: int) -> list[float]:
    """Exponential moving average (bias-corrected, like TensorBoard's smoothing)."""
    alpha = 2.0 / (span + 1)
    out: list[float] = []
    avg, weight = 0.0, 0.0
    for v in values:
        avg = (1 - alpha) * avg + alpha * v
        weight = (1 - alpha) * weight + alpha
        out.append(avg / weight)
    return out


def _wants_log_scale(all_values: list[float]) -> bool:
    """Log y when values are positive and span more than a decade (early loss dwarfs late)."""
    positive = [v for v in all_values if v > 0 and math.isfinite(v)]
    if len(positive) != len(all_values) or not positive:
        return False
    return max(positive) / min(positive) > 10


def _draw(path: Path, title: str, ylabel: str, curves: dict[str, tuple[list, list]],
          log_ok: bool, smooth: bool) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(8, 4.5), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax: Any = fig.add_subplot()
    for key, (xs, ys) in curves.items():
        if smooth and len(ys) >= _SMOOTH_MIN_POINTS:
            # Raw per-step values are noisy; show them faint with a smoothed trend on top.
            (raw,) = ax.plot(xs, ys, alpha=0.25, linewidth=0.8)
            ax.plot(xs, _ema(ys, span=max(5, len(ys) // 50)), color=raw.get_color(),
                    linewidth=1.8, label=f"{key} (smoothed)")
        else:
            ax.plot(xs, ys, marker="o" if len(ys) < 20 else None, markersize=3,
                    linewidth=1.5, label=key)
    if log_ok and _wants_log_scale([y for _, ys in curves.values() for y in ys]):
        ax.set_yscale("log")
        # Plain "0.6" / "2" tick labels instead of matplotlib's default "6x10^-1".
        plain = FuncFormatter(lambda v, _pos: f"{v:g}")
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
    elif not log_ok and min((y for _, ys in curves.values() for y in ys), default=0) >= 0:
        # lr and throughput are read against zero: autoscaling would blow a 2% jitter in
        # tokens/s up to full height and make a steady run look erratic.
        ax.set_ylim(bottom=0)
    ax.set_title(title)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="major", alpha=0.4)
    ax.legend(loc="best")
    # Write-then-rename so a viewer never opens a half-written PNG.
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)


def draw_plots(run_dir: Path) -> list[Path]:
    """Draw every plot whose metrics exist; return the PNG paths written ([] if none)."""
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
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
        out.parent.mkdir(parents=True, exist_ok=True)
        # Log scale helps loss and grad-norm; lr and throughput read better linear. The lr
        # schedule is exact, not noisy, so smoothing it would only distort warm-up.
        _draw(out, f"{title} — {run_dir.name}", ylabel, curves,
              log_ok=stem in ("loss", "grad_norm"), smooth=stem != "lr")
        written.append(out)
    return written
