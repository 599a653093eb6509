"""JSON Lines (one JSON object a line) with messages that name the file and the line. Shared by the
data readers (data/completions.py) and the sandbox's task files (sandbox/tasks.py)."""

from __future__ import annotations

import json
from typing import Any

from trainwell.errors import DataError


def json_objects(text: str, where: str) -> list[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line of ``text``; ``where`` names the file in errors."""
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: line {n} is not JSON ({e.msg}); write one JSON object per line.") from None
        if not isinstance(row, dict):
            raise DataError(f"{where}: line {n} is a {type(row).__name__}, not a JSON object with named columns.")
        rows.append((n, row))
    return rows
