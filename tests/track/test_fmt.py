"""Human-readable formatting used by progress lines and reports."""

import math

import pytest

from trainwell.track import fmt


@pytest.mark.parametrize(
    ("x", "expected"),
    [(12.5, "12.5"), (850.0, "850"), (21_300.0, "21.3k"), (999_960.0, "1.0M"),
     (3.4e6, "3.4M"), (2.5e9, "2.5G"), (math.nan, "-"), (None, "-")],
)
def test_human_rate(x: float | None, expected: str) -> None:
    assert fmt.human_rate(x) == expected


@pytest.mark.parametrize(
    ("s", "expected"),
    [(0, "0s"), (42.4, "42s"), (192, "3m12s"), (7384, "2h03m"), (90_000, "1d01h"),
     (None, "?"), (math.inf, "?"), (-1, "?")],
)
def test_human_duration(s: float | None, expected: str) -> None:
    assert fmt.human_duration(s) == expected


def test_sig_and_lr() -> None:
    assert fmt.sig(2.314159) == "2.314"
    assert fmt.sig(0.000123456) == "0.0001235"
    assert fmt.sig(None) == "-"
    assert fmt.lr(0.00294) == "2.94e-03"
