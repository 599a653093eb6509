"""`trainwell compare RUN_DIR...`: runs side by side, read back from their run dirs alone.

For every metric all the runs logged, one PNG with each run's curve overlaid (against the runs'
common unit: tokens, env steps, epochs, else optimizer steps), and one table: per run the
config keys that differ between the runs (a sweep's knobs) and the final and best value of each
evaluation metric and of the train loss. The table is printed and written with the plots to
``compare.md``.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from trainwell.errors import TrainwellError
from trainwell.track import fmt
from trainwell.track.metrics import read_metrics
from trainwell.track.xunit import STEP, XUnit, linear, read_toml, x_unit

# the x-axis counters themselves are not curves worth comparing
_NOT_CURVES = {"step", "time", "rl/env_steps"}
# metrics where more is better (by their last name part); every other metric is lower-is-better
_HIGHER = {"return", "episode_return", "episode_length", "length", "accuracy", "pair_accuracy", "ari", "nmi",
           "r2", "reward", "mfu", "explained_variance"}
_IGNORED_CONFIG = ("run.", "description")  # the run's own name, folder and blurb are not knobs
_MAX_KNOB_COLUMNS = 4  # more differing keys go to a table of their own (runs as columns)


@dataclass
class Run:
    path: Path
    name: str
    records: list[dict]
    unit: XUnit
    config: dict[str, Any]  # dotted key -> value


def higher_is_better(metric: str) -> bool:
    last = metric.rsplit("/", 1)[-1]
    return last in _HIGHER or last.endswith("_per_s")


def _flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[prefix + key] = value
    return out


def _series(records: list[dict], key: str) -> tuple[list[int], list[float]]:
    steps, values = [], []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and "step" in r:
            steps.append(int(r["step"]))
            values.append(float(v))
    return steps, values


def metric_names(records: list[dict]) -> set[str]:
    return {k for r in records for k, v in r.items()
            if k not in _NOT_CURVES and isinstance(v, (int, float)) and not isinstance(v, bool)}


def load_runs(paths: list[Path]) -> list[Run]:
    """The runs to compare; one clear error for a folder that is not a run, or fewer than two."""
    runs: list[Run] = []
    seen: set[Path] = set()
    for path in paths:
        path = Path(path)
        if not (path / "metrics.jsonl").is_file():
            what = "does not exist" if not path.exists() else "has no metrics.jsonl"
            raise TrainwellError(f"{path} {what}, so it is not a run directory; pass folders written by "
                                 f"`trainwell train` (e.g. runs/default-20260101-120000).")
        if path.resolve() in seen:
            continue
        seen.add(path.resolve())
        records = read_metrics(path / "metrics.jsonl")
        config = {k: v for k, v in _flatten(read_toml(path / "config.toml")).items()
                  if not k.startswith(_IGNORED_CONFIG)}
        runs.append(Run(path, path.name, records, x_unit(path, records), config))
    if len(runs) < 2:
        raise TrainwellError(f"compare needs at least two different run directories; got only {runs[0].path}. "
                             f"Pass more, e.g. `trainwell compare runs/lr-*`.")
    names = [r.name for r in runs]
    if len(set(names)) < len(names):  # same folder name under different parents: show the parent too
        for r in runs:
            r.name = f"{r.path.parent.name}/{r.path.name}"
    return runs


def shared_metrics(runs: list[Run]) -> list[str]:
    per_run = [metric_names(r.records) for r in runs]
    shared = sorted(set.intersection(*per_run))
    if not shared:
        listing = "; ".join(f"{r.name}: {', '.join(sorted(m)[:6]) or 'nothing'}" for r, m in zip(runs, per_run))
        raise TrainwellError(f"these runs share no metric, so there is nothing to overlay ({listing}); "
                             f"compare runs of the same kind of training.")
    return shared


def differing_config(runs: list[Run]) -> list[str]:
    keys = sorted(set().union(*(r.config for r in runs)))
    return [k for k in keys if len({repr(r.config.get(k)) for r in runs}) > 1]


def run_labels(runs: list[Run], knobs: list[str]) -> list[str]:
    """Legend names: the run's knob values when a few keys differ, else the folder name."""
    if not knobs or len(knobs) > 3:
        return [r.name for r in runs]
    return [", ".join(f"{k.split('.')[-1]}={_value(r.config.get(k))}" for k in knobs) for r in runs]


def _value(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return fmt.sig(v, 3)
    text = str(v)
    return text if len(text) <= 40 else text[:39] + "…"


def knob_table(runs: list[Run], knobs: list[str]) -> tuple[list[str], list[list[str]]]:
    """The differing config keys, one row each, a column per run."""
    return ["key", *[r.name for r in runs]], [[k, *(_value(r.config.get(k)) for r in runs)] for k in knobs]


def _last_step(run: Run) -> int:
    return max((int(x["step"]) for x in run.records if "step" in x), default=1)


def common_unit(runs: list[Run]) -> tuple[list[XUnit], XUnit | None]:
    """Each run's step -> unit table if all runs share a unit (else steps for all), and the table
    for an optimizer-step axis on top when it holds for every run (None when the runs map steps to
    the unit differently, e.g. a batch-size sweep)."""
    longest = max(runs, key=_last_step)
    if len({r.unit.label for r in runs}) > 1:
        steps = linear(STEP, 1.0, _last_step(longest))
        return [steps for _ in runs], steps
    grid = np.linspace(0, min(_last_step(r) for r in runs), 64)  # where every run has steps
    same = all(np.allclose(r.unit.at(grid), longest.unit.at(grid)) for r in runs)
    # the longest run's table also covers the steps an early-stopped run never reached
    return [r.unit for r in runs], longest.unit if same else None


# ------------------------------------------------------------------ table


def table_columns(runs: list[Run], shared: list[str]) -> list[str]:
    """The metrics the table reports: every shared evaluation metric, then the train loss (and
    the training episodes' return)."""
    # a spread (val/return_std) is context for a value, not a result of its own
    headline = [m for m in shared if not m.startswith(("train/", "rl/")) and not m.endswith("_std")]
    return headline + [m for m in ("train/loss", "rl/episode_return") if m in shared]


def final_and_best(run: Run, metric: str) -> tuple[str, str]:
    steps, values = _series(run.records, metric)
    if not values:
        return "—", "—"
    pick = max if higher_is_better(metric) else min
    i = values.index(pick(values))  # first occurrence: the earliest step that reached it
    return fmt.sig(values[-1]), f"{fmt.sig(values[i])} @ {steps[i]}"


def build_table(runs: list[Run], shared: list[str], knobs: list[str]) -> tuple[list[str], list[list[str]]]:
    """One row per run: its knob values (when there are few) and each metric's final and best."""
    metrics = table_columns(runs, shared)
    knobs = knobs if len(knobs) <= _MAX_KNOB_COLUMNS else []
    header = ["run", *knobs]
    for m in metrics:
        header += [f"{m} final", f"{m} best ({'max' if higher_is_better(m) else 'min'}) @ step"]
    rows = []
    for r in runs:
        row = [r.name, *(_value(r.config.get(k)) for k in knobs)]
        for m in metrics:
            row += list(final_and_best(r, m))
        rows.append(row)
    return header, rows


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    return "\n".join([line(header), "|" + "---|" * len(header), *(line(r) for r in rows)]) + "\n"


def render_table(header: list[str], rows: list[list[str]], stream: TextIO) -> None:
    """A rich table on a terminal; aligned plain columns otherwise (logs, pipes)."""
    isatty = getattr(stream, "isatty", None)
    if isatty and isatty():
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text

        table = Table(title="trainwell compare")
        for h in header:
            table.add_column(h, overflow="fold")
        for r in rows:
            table.add_row(*(Text(c) for c in r))
        Console(file=stream).print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    for cells in (header, *rows):
        stream.write("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() + "\n")
    stream.flush()


# ------------------------------------------------------------------ plots


def plot_metric(runs: list[Run], metric: str, labels: list[str], units: list[XUnit], top: XUnit | None,
                path: Path) -> Path:
    from trainwell.track.axes import unit_axis, value_axis
    from trainwell.track.plots import new_figure, plot_curve, save_figure

    fig = new_figure()
    ax: Any = fig.add_subplot()
    colors = [f"C{i % 10}" for i in range(len(runs))]
    all_values: list[float] = []
    first, last = math.inf, -math.inf
    for run, label, unit, color in zip(runs, labels, units, colors):
        steps, values = _series(run.records, metric)
        if not values:
            continue
        plot_curve(ax, unit.at(steps), values, label, smooth=metric.startswith(("train/", "rl/")), color=color)
        all_values += values
        first, last = min(first, steps[0]), max(last, steps[-1])
    last_part = metric.rsplit("/", 1)[-1]
    log_ok = "loss" in last_part or last_part == "grad_norm"
    value_axis(ax, all_values, log_ok=log_ok, from_zero=last_part in ("lr",) or last_part.endswith("_per_s"))
    unit_axis(ax, top or units[0], first, last, steps_on_top=top is not None)
    ax.set_title(f"{metric} — {len(runs)} runs", pad=10)
    ax.set_ylabel(metric)
    ax.grid(True, which="major", alpha=0.4)
    ax.legend(loc="best", fontsize="small")
    save_figure(fig, path)
    return path


def default_out(runs: list[Run]) -> Path:
    """compare-<time> in the folder that holds the runs (e.g. runs/compare-20260101-120000)."""
    parent = Path(os.path.commonpath([str(r.path.resolve().parent) for r in runs]))
    return parent / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"


def compare(paths: list[Path], out: Path | None = None, *, stream: TextIO | None = None) -> Path:
    """Write the overlaid plots and compare.md into ``out``; print the table; return ``out``."""
    stream = stream if stream is not None else sys.stdout
    runs = load_runs(paths)
    shared = shared_metrics(runs)
    knobs = differing_config(runs)
    out = Path(out) if out is not None else default_out(runs)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainwellError(f"cannot create the output folder {out} ({e.strerror}); pass --out DIR.") from None
    labels = run_labels(runs, knobs)
    units, top = common_unit(runs)
    pngs = [plot_metric(runs, m, labels, units, top, out / f"{m.replace('/', '_')}.png") for m in shared]
    header, rows = build_table(runs, shared, knobs)
    render_table(header, rows, stream)
    if len(knobs) > _MAX_KNOB_COLUMNS:
        stream.write("\nconfig keys that differ:\n")
        render_table(*knob_table(runs, knobs), stream)

    lines = [f"# Comparison of {len(runs)} runs", ""]
    lines += [f"- `{r.name}`: `{r.path.resolve()}`" for r in runs]
    lines += ["", "## Final and best metrics", "",
              "final: the last logged value; best: the lowest (min) or highest (max) logged value and its step.", ""]
    lines += [markdown_table(header, rows)]
    if knobs:
        lines += ["## Config keys that differ", "", markdown_table(*knob_table(runs, knobs))]
    else:
        lines += ["The runs' configs are identical (apart from `run.*`).", ""]
    x = units[0].label
    lines += ["## Curves", "", f"Against {x}" + (" (optimizer steps on top)." if x != STEP and top is not None else "."), ""]
    lines += [f"![{m}]({p.name})" for m, p in zip(shared, pngs)]
    (out / "compare.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    stream.write(f"\n{len(pngs)} plots and compare.md in {out}\n")
    return out
