"""Readable axes for every curve trainwell draws (run plots and `trainwell compare`).

- Tick labels carry just enough digits to tell neighbours apart ("0.25", not "0.250000"), and
  large counts get a suffix ("200k", "1.5M"), so no label is wider than it needs to be.
- A log axis is used only when the values cross at least two powers of ten, and then labels
  decades only: the minor ticks 2..9 stay as unlabelled marks. matplotlib's default labels
  minor ticks of a short log range too, which overprints them ("0.9 0.8 0.7 ..." in one column).
- The x axis shows the run's natural unit (track/xunit.py) and, on top, optimizer steps at
  their positions in that unit.

matplotlib is imported inside the functions: this module is imported by track/plots.py,
which must stay importable without matplotlib.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from trainwell.track.xunit import STEP, XUnit

NICE_STEPS = [1, 2, 2.5, 5, 10]  # tick spacings: 0.25 / 500 / 2k, never 0.3 or 600
_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def _clean_exponent(text: str) -> str:
    """"3e-05" -> "3e-5", "1e+06" -> "1e6"."""
    if "e" not in text:
        return text
    mantissa, exp = text.split("e")
    return f"{mantissa}e{int(exp)}"


def tick_labels(values: Sequence[float]) -> list[str]:
    """Labels for a row of ticks: the fewest decimals that keep every label exact, a k/M/G
    suffix from 10,000 up, scientific notation below 0.001."""
    finite = [float(v) for v in values if math.isfinite(v)]
    top = max((abs(v) for v in finite), default=0.0)
    if top == 0:
        return ["0" for _ in values]
    scale, suffix = next(((s, n) for s, n in _SUFFIXES if top >= s and top >= 1e4), (1.0, ""))
    scaled = [v / scale for v in values]
    if suffix == "" and top < 1e-3:  # learning rates and the like: 2e-5, 4e-5, ...
        for digits in range(1, 8):
            labels = [_clean_exponent(f"{v:.{digits}g}") if v else "0" for v in scaled]
            if all(abs(float(lab) - v) <= 1e-9 * top for lab, v in zip(labels, scaled)):
                return labels
        return labels
    for decimals in range(0, 8):
        labels = [f"{v:.{decimals}f}" for v in scaled]
        if all(abs(float(lab) - v) <= 1e-9 * top / scale for lab, v in zip(labels, scaled)):
            break
    return [("0" if float(lab) == 0 else lab) + (suffix if float(lab) != 0 else "") for lab in labels]


def decade_label(v: float) -> str:
    """A power of ten: 0.01, 0.1, 1, 10, 100, 1000, 10k, 1M; below 0.001 as 1e-4."""
    if v <= 0 or not math.isfinite(v):
        return ""
    exp = round(math.log10(v))
    if exp < -3:
        return f"1e{exp}"
    if exp < 0:
        return f"{10.0 ** exp:.{-exp}f}"
    return tick_labels([v])[0]


def _formatter() -> Any:
    from matplotlib.ticker import Formatter

    class Readable(Formatter):
        """Formats all ticks of an axis together (see tick_labels)."""

        def format_ticks(self, values: Sequence[float]) -> list[str]:
            return tick_labels(values)

        def __call__(self, x: float, pos: int | None = None) -> str:
            return tick_labels([x])[0]  # the cursor read-out: one value alone

    return Readable()


def spans_decades(values: Sequence[float]) -> bool:
    """True when all values are positive and at least two powers of ten lie within their range."""
    positive = [v for v in values if math.isfinite(v)]
    if not positive or min(positive) <= 0:
        return False
    lo, hi = math.log10(min(positive)), math.log10(max(positive))
    return math.floor(hi + 1e-9) - math.ceil(lo - 1e-9) >= 1


def value_axis(ax: Any, values: Sequence[float], *, log_ok: bool, from_zero: bool) -> None:
    """Style the y axis for ``values``: log with decade labels, or linear (from 0 if asked)."""
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter

    if log_ok and spans_decades(values):
        ax.set_yscale("log")
        ax.yaxis.set_major_locator(LogLocator(base=10))
        ax.yaxis.set_major_formatter(lambda v, _pos: decade_label(v))
        ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(2, 10))))
        ax.yaxis.set_minor_formatter(NullFormatter())
        return
    ax.yaxis.set_major_locator(MaxNLocator(nbins=6, steps=NICE_STEPS))
    ax.yaxis.set_major_formatter(_formatter())
    if from_zero and min(values, default=0) >= 0:
        # lr and throughput are read against zero: autoscaling would blow a 2% jitter in
        # tokens/s up to full height and make a steady run look erratic.
        ax.set_ylim(bottom=0)


def unit_axis(ax: Any, unit: XUnit, first_step: float, last_step: float, *, steps_on_top: bool = True) -> None:
    """The natural unit on the bottom x axis and, unless that is steps already (or
    ``steps_on_top`` is off), optimizer steps on a secondary axis on top, each step tick placed at
    its position in the unit."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(unit.label)
    ax.xaxis.set_major_locator(MaxNLocator(nbins=7, steps=NICE_STEPS))
    ax.xaxis.set_major_formatter(_formatter())
    if not steps_on_top or unit.is_step or last_step <= first_step:
        return
    lo, hi = (float(v) for v in unit.at([first_step, last_step]))
    if hi <= lo:
        return
    steps = [s for s in MaxNLocator(nbins=5, integer=True, steps=NICE_STEPS).tick_values(first_step, last_step)
             if first_step <= s <= last_step]
    # RL's step -> env-step table is a staircase (a rollout, then its updates): two step ticks
    # can land on one env-step position; keep ticks at least a tenth of the axis apart.
    kept: list[tuple[float, float]] = []
    for s in steps:
        x = float(unit.at(s))
        if not kept or x - kept[-1][1] >= 0.1 * (hi - lo):
            kept.append((s, x))
    top = ax.secondary_xaxis("top")  # identity transform: its ticks sit at unit positions
    top.set_xticks([x for _, x in kept], labels=tick_labels([s for s, _ in kept]))
    top.set_xlabel(STEP, color="0.35")
    top.tick_params(axis="x", colors="0.35")
