"""``metrics.jsonl``: one JSON object per logged step, the run dir's primary metric record.

Format (the contract other tools read)::

    {"step": 120, "train/loss": 2.3141, "train/lr": 0.00294}
    {"step": 120, "val/loss": 2.41}

- A step may appear on several lines (train and eval metrics are logged separately).
- Non-finite floats (NaN, +/-Inf) are written as ``null``: bare ``NaN`` is not valid JSON and
  breaks strict readers (jq, browsers, pandas with some engines). Readers get ``None`` back.
- Each line is flushed as soon as it is written, so a crash loses at most the line being
  written; ``read_metrics`` skips such a truncated last line.
"""

from __future__ import annotations

import json
import time
import math
import os
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any


def _clean(key: str, value: Any) -> float | int | None:
    """Coerce a metric to a JSON-safe number; accepts numpy/torch scalars via ``float()``."""
    if isinstance(value, bool):  # bool is an int subclass; record it as 0/1
        return int(value)
    if isinstance(value, int):
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise TypeError(
            f"metric {key!r} must be a number, got {type(value).__name__}: {value!r}"
        ) from None
    return f if math.isfinite(f) else None


def _parse_lines(text: str, path: Path) -> list[dict]:
    """Parse JSONL text; a malformed *last* line is a crash artefact and is dropped."""
    lines = text.split("\n")
    # A file written completely ends with "\n", so the final split element is "".
    records: list[dict] = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if i == len(lines) - 1:  # truncated by a crash mid-write
                break
            raise ValueError(
                f"{path}: line {i + 1} is not valid JSON; the metrics file is corrupt "
                "(only a truncated last line is tolerated)"
            ) from None
        if not isinstance(obj, dict):
            raise ValueError(f"{path}: line {i + 1} is not a JSON object")
        records.append(obj)
    return records


def read_metrics(path: Path) -> list[dict]:
    """All records in file order; ``[]`` if the file is missing or empty."""
    path = Path(path)
    if not path.exists():
        return []
    return _parse_lines(path.read_text(encoding="utf-8", errors="replace"), path)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)  # atomic on POSIX and Windows: readers see old or new, never half


class MetricsJSONL:
    """Append-only JSONL metric sink.

    ``resume_step=S``: the run is resuming from the checkpoint at step S. A killed run may
    have logged steps after S; those steps will be run (and logged) again, so they are
    removed first, otherwise the file would hold two different histories for one step.
    """

    def __init__(self, path: Path, *, resume_step: int | None = None) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            self._repair(resume_step)
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")

    def _repair(self, resume_step: int | None) -> None:
        text = self.path.read_text(encoding="utf-8", errors="replace")
        truncated = bool(text) and not text.endswith("\n")
        if resume_step is None and not truncated:
            return  # nothing to fix; plain append
        records = _parse_lines(text, self.path)
        if resume_step is not None:
            # Records without a step are not ours to judge; keep them.
            records = [r for r in records if not isinstance(r.get("step"), int)
                       or r["step"] <= resume_step]
        # Rewriting (rather than truncating in place) keeps the old file intact until the
        # new one is complete, so a crash here cannot lose logged history.
        _atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in records))

    def log(self, step: int, metrics: Mapping[str, float | int]) -> None:
        if self._file is None:
            raise ValueError(f"MetricsJSONL({self.path}) is closed")
        # "time" (Unix seconds) lets tools measure step times and stalls from the log alone.
        record: dict[str, Any] = {"step": int(step), "time": round(time.time(), 4)}
        for key, value in metrics.items():
            if key in ("step", "time"):
                raise ValueError(f"metric name '{key}' is reserved")
            record[key] = _clean(key, value)
        # allow_nan=False guarantees valid JSON: _clean already mapped non-finite to None.
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        # flush (not fsync): the OS has the line even if Python dies; fsync per step
        # would cost milliseconds on some filesystems for little extra safety.
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsJSONL:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
