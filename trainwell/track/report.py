"""End-of-run summary: numbers a person wants first, read back from the run dir alone.

Works on any run dir (finished, killed, or still running) because it only reads the
contract files: ``metrics.jsonl``, ``meta.json``, optional ``summary.json`` and
``checkpoints/step-*``.
"""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Any, TextIO

from trainwell.track import fmt
from trainwell.track.metrics import read_metrics

FINAL_LOSS_WINDOW = 5  # train loss is noisy; average the last few logged values
_CKPT_RE = re.compile(r"^step-(\d+)$")
# summary.json is written by the engine; these are the wall-time keys we understand.
_WALL_KEYS = ("wall_time_s", "wall_seconds", "wall_s", "elapsed_s")


def _read_json(path: Path) -> dict:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}  # missing or half-written: the summary just has fewer rows
    return obj if isinstance(obj, dict) else {}


def _values(records: list[dict], key: str) -> list[tuple[int, float]]:
    """(step, value) pairs with a finite value; null (NaN/Inf at log time) is excluded."""
    out = []
    for r in records:
        v = r.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            out.append((int(r.get("step", -1)), float(v)))
    return out


def _mean_rate(pairs: list[tuple[int, float]]) -> float | None:
    vals = [v for _, v in pairs]
    if len(vals) > 1:
        vals = vals[1:]  # the first window includes compile / warm-up
    return sum(vals) / len(vals) if vals else None


def _checkpoints(run_dir: Path) -> list[str]:
    ckpt_dir = run_dir / "checkpoints"
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p.name) for p in ckpt_dir.iterdir()
             if p.is_dir() and (m := _CKPT_RE.match(p.name))]
    return [name for _, name in sorted(found)]  # numeric order: step-900 before step-1000


def summarize(run_dir: Path) -> dict:
    run_dir = Path(run_dir)
    records = read_metrics(run_dir / "metrics.jsonl")
    meta = _read_json(run_dir / "meta.json")
    summary_json = _read_json(run_dir / "summary.json")

    steps = [int(r["step"]) for r in records if isinstance(r.get("step"), int)]
    train = _values(records, "train/loss")
    val = _values(records, "val/loss")
    tail = [v for _, v in train[-FINAL_LOSS_WINDOW:]]
    # min() keeps the first occurrence on ties: the earliest step that reached the best.
    best = min(val, key=lambda sv: sv[1]) if val else None
    git = meta.get("git") if isinstance(meta.get("git"), dict) else None

    computed = {
        "run": run_dir.name,
        "steps": max(steps) if steps else 0,
        "final_train_loss": sum(tail) / len(tail) if tail else None,
        "nonfinite_train_loss": sum(1 for r in records
                                    if "train/loss" in r and r["train/loss"] is None),
        "best_val_loss": best[1] if best else None,
        "best_val_step": best[0] if best else None,
        "last_val_loss": val[-1][1] if val else None,
        "last_val_step": val[-1][0] if val else None,
        "tokens_per_s": _mean_rate(_values(records, "train/tokens_per_s")),
        "samples_per_s": _mean_rate(_values(records, "train/samples_per_s")),
        "wall_time_s": next((float(summary_json[k]) for k in _WALL_KEYS
                             if isinstance(summary_json.get(k), (int, float))), None),
        "checkpoints": _checkpoints(run_dir),
        "seed": meta.get("seed"),
        "start_time": meta.get("start_time"),
        "trainwell": meta.get("trainwell"),
        "commit": (git["commit"][:12] + ("-dirty" if git.get("dirty") else "")) if git else None,
        "torch": meta.get("torch"),
    }
    # The engine's own end-of-run numbers (summary.json) are exact; they win over estimates.
    return {**computed, **{k: v for k, v in summary_json.items() if v is not None}}


# Keys summary_rows() formats specially; any other scalar key is shown generically after them, so
# render_summary also reads dicts of another shape (e.g. the engine's summary.json).
_KNOWN = {"val_loss", "val_bpc", "unigram_val_loss", "unigram_val_bpc", "run", "steps", "final_train_loss", "nonfinite_train_loss", "best_val_loss",
          "best_val_step", "best_step", "last_val_loss", "last_val_step", "tokens_per_s",
          "samples_per_s", "wall_time_s", "wall_seconds", "checkpoints", "seed", "trainwell",
          "commit", "torch", "start_time"}


def _generic(value: Any) -> str:
    if isinstance(value, float):
        return fmt.sig(value)
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, default=str)
    return str(value)


def _at(loss: Any, step: Any) -> str:
    return fmt.sig(loss) + (f" @ step {step}" if step is not None else "")


def summary_rows(s: dict) -> list[tuple[str, str]]:
    """(label, formatted value) for every field that has a value."""
    rows: list[tuple[str, str]] = []
    for key in ("run", "steps"):
        if s.get(key) is not None:
            rows.append((key, str(s[key])))
    if s.get("final_train_loss") is not None:
        rows.append((f"train loss (last {FINAL_LOSS_WINDOW})", fmt.sig(s["final_train_loss"])))
    if s.get("nonfinite_train_loss"):
        rows.append(("non-finite train loss", f"{s['nonfinite_train_loss']} logged steps"))
    if s.get("val_loss") is not None:
        text = fmt.sig(s["val_loss"]) + (f" ({fmt.sig(s['val_bpc'])} bits/char)" if "val_bpc" in s else "")
        if s.get("unigram_val_loss") is not None:
            text += f"; unigram baseline {fmt.sig(s['unigram_val_loss'])}"
            text += f" ({fmt.sig(s['unigram_val_bpc'])} bits/char)" if "unigram_val_bpc" in s else ""
        rows.append(("final val loss (nats)", text))
    if s.get("best_val_loss") is not None:
        best_step = s.get("best_val_step", s.get("best_step"))
        rows.append(("best val loss", _at(s["best_val_loss"], best_step)))
    if s.get("last_val_loss") is not None:
        rows.append(("last val loss", _at(s["last_val_loss"], s.get("last_val_step"))))
    if s.get("tokens_per_s") is not None:
        rows.append(("throughput", f"{fmt.human_rate(s['tokens_per_s'])} tok/s"))
    elif s.get("samples_per_s") is not None:
        rows.append(("throughput", f"{fmt.human_rate(s['samples_per_s'])} samples/s"))
    wall = s.get("wall_time_s", s.get("wall_seconds"))
    if wall is not None:
        rows.append(("wall time", fmt.human_duration(wall)))
    if "checkpoints" in s:
        ckpts = s["checkpoints"] or []
        shown = ", ".join(ckpts[-3:])
        more = "…, " if len(ckpts) > 3 else ""
        rows.append(("checkpoints", f"{len(ckpts)} ({more}{shown})" if ckpts else "none"))
    for key in ("seed", "trainwell", "commit", "torch", "start_time"):
        if s.get(key) is not None:
            rows.append((key.replace("_", " "), str(s[key])))
    for key, value in s.items():
        if key not in _KNOWN and value is not None:
            rows.append((key.replace("_", " "), _generic(value)))
    return rows


def render_summary(summary: dict, *, stream: TextIO | None = None) -> None:
    """A rich table on a terminal; aligned plain ``label  value`` lines otherwise (logs)."""
    stream = stream if stream is not None else sys.stdout
    rows = summary_rows(summary) or [("summary", "empty")]
    isatty = getattr(stream, "isatty", None)
    if not (isatty and isatty()):
        width = max(len(label) for label, _ in rows)
        stream.write("".join(f"{label:<{width}}  {value}\n" for label, value in rows))
        stream.flush()
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"run summary: {summary.get('run')}", show_header=False)
    table.add_column(style="bold")
    table.add_column()
    for label, value in rows:
        table.add_row(label, Text(value))  # Text: no markup parsing of values
    Console(file=stream).print(table)
