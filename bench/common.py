"""Helpers shared by the bench scripts: run a process and time it, read step times from a run."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# ../shared next to the checkout (or next to a folder of worktrees holding it)
SHARED = next((p / "shared" for p in ROOT.parents if (p / "shared" / "data").is_dir()), ROOT.parent / "shared")
SHAKESPEARE = SHARED / "data" / "tinyshakespeare.txt"


def timed_process(args: list[str], **kw) -> tuple[float, subprocess.CompletedProcess]:
    """Wall time of a whole process, from spawn to exit (imports and everything included)."""
    t0 = time.perf_counter()
    out = subprocess.run(args, capture_output=True, text=True, **kw)
    wall = time.perf_counter() - t0
    if out.returncode != 0:
        sys.exit(f"command failed ({out.returncode}): {' '.join(args)}\n{out.stderr[-3000:]}")
    return wall, out


def trainwell_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "trainwell", *args]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def steady_step_seconds(records: list[dict], first: int, last: int) -> float:
    """Mean seconds per step between the logged steps ``first`` and ``last`` (train lines).

    Uses the wall-clock ``time`` of each metrics line, so everything the loop does between
    those steps counts: logging, checkpointing, data loading.
    """
    times = {r["step"]: r["time"] for r in records if "train/loss" in r}
    return (times[last] - times[first]) / (last - first)


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def env_note() -> str:
    import torch

    return (f"python {sys.version.split()[0]}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
            f"{os.cpu_count()} cpus")
