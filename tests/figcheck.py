"""Checks on a drawn matplotlib Figure: what a reader sees, measured with the renderer."""

from __future__ import annotations

from itertools import combinations
from typing import Any


def all_axes(fig: Any) -> list[Any]:
    """Every Axes of the figure, including secondary axes (children of an Axes)."""
    out: list[Any] = []
    stack = list(fig.axes)
    while stack:
        ax = stack.pop(0)
        out.append(ax)
        stack.extend(getattr(ax, "child_axes", []))
    return out


def tick_labels(axis: Any) -> list[Any]:
    """The tick label Text artists the renderer draws (ticks inside the view, non-empty text)."""
    drawn = axis._update_ticks()  # matplotlib's own list of the ticks it draws this time
    labels = []
    for tick in drawn:
        for label in (tick.label1, tick.label2):
            if label.get_visible() and label.get_text().strip():
                labels.append(label)
    return labels


def chrome(fig: Any) -> list[tuple[str, Any]]:
    """(description, Text) for every tick label, axis label and title of the figure."""
    texts: list[tuple[str, Any]] = []
    if fig._suptitle is not None and fig._suptitle.get_text():
        texts.append(("suptitle", fig._suptitle))
    for i, ax in enumerate(all_axes(fig)):
        if not ax.get_visible() or not ax.axison:
            for t in (ax.title, ax._left_title, ax._right_title):
                if t.get_text():
                    texts.append((f"axes {i} title", t))
            continue
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            texts += [(f"axes {i} {name} tick {t.get_text()!r}", t) for t in tick_labels(axis)]
            if axis.label.get_text():
                texts.append((f"axes {i} {name} label", axis.label))
        for t in (ax.title, ax._left_title, ax._right_title):
            if t.get_text():
                texts.append((f"axes {i} title", t))
    return texts


def overlaps(fig: Any, slack_px: float = 0.5, *, draw: bool = True) -> list[str]:
    """Pairs of texts (tick labels, axis labels, titles) whose drawn extents overlap."""
    if draw:
        fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(what, t.get_window_extent(renderer)) for what, t in chrome(fig)]
    bad = []
    for (wa, a), (wb, b) in combinations(boxes, 2):
        w = min(a.x1, b.x1) - max(a.x0, b.x0)
        h = min(a.y1, b.y1) - max(a.y0, b.y0)
        if w > slack_px and h > slack_px:
            bad.append(f"{wa} overlaps {wb}")
    return bad


def missing_labels(fig: Any, *, draw: bool = True) -> list[str]:
    """Axes that show tick labels without an axis label, and a figure without any title."""
    if draw:
        fig.canvas.draw()
    problems = []
    for i, ax in enumerate(all_axes(fig)):
        if not ax.get_visible() or not ax.axison:
            continue
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis)):
            if tick_labels(axis) and not axis.label.get_text().strip():
                problems.append(f"axes {i}: {name} tick labels but no {name} label")
    titled = (fig._suptitle is not None and fig._suptitle.get_text()) or any(
        t.get_text() for ax in fig.axes for t in (ax.title, ax._left_title, ax._right_title))
    if not titled:
        problems.append("no title")
    return problems


def problems(fig: Any) -> list[str]:
    """overlaps + missing_labels, from one draw of the figure."""
    fig.canvas.draw()
    return overlaps(fig, draw=False) + missing_labels(fig, draw=False)
