"""Human-readable number formatting shared by the console progress and run reports.

Kept dependency-free (stdlib only) because the CLI imports it on every invocation.
"""

from __future__ import annotations

import math

_SUFFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))


def human_rate(x: float | None) -> str:
    """Compact magnitude: 21300 -> "21.3k", 3.4e6 -> "3.4M", 12.5 -> "12.5"."""
    if x is None or not math.isfinite(x):
        return "-"
    for scale, suffix in _SUFFIXES:
        # Round first so 999_960 prints as "1.0M" rather than "1000.0k".
        if abs(x) >= scale * 0.99995:
            return f"{x / scale:.1f}{suffix}"
    return f"{x:.1f}" if abs(x) < 100 else f"{x:.0f}"


def human_duration(seconds: float | None) -> str:
    """Short duration: 42 -> "42s", 192 -> "3m12s", 7384 -> "2h03m", 90000 -> "1d01h"."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "?"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def sig(x: float | None, digits: int = 4) -> str:
    """``digits`` significant digits, for losses: 2.314159 -> "2.314", 0.000123 -> "0.000123"."""
    if x is None:
        return "-"
    if not math.isfinite(x):
        return str(x)
    return f"{x:.{digits}g}"


def lr(x: float | None) -> str:
    """Learning rates span decades, so scientific notation: 0.00294 -> "2.94e-03"."""
    if x is None or not math.isfinite(x):
        return "-" if x is None else str(x)
    return f"{x:.2e}"
