"""What the server stamps on every message, and the rule by which a silo ignores stale ones.

Flower has no notion of resuming a run: a restarted server is a new Flower run, and a restarted
SuperLink can still deliver messages the dead server had queued. So every message carries

    tw-run          the federated run's token (stays the same when the server resumes it)
    tw-started      when that run first started (orders two different runs)
    tw-incarnation  how many times the server has started for this run (1, 2, ... after each resume)
    server-round    the round (Flower's own key)

and a silo remembers the newest stamp it has accepted. It ignores a message from an older run, from
an earlier incarnation (a server that has since died and restarted), or, within one incarnation,
for a round before the newest it has seen. A *newer* incarnation may legitimately repeat a round the
silo already trained (the server died before checkpointing it): the silo then rewinds to its own
state after the previous round and trains the round again, so the result is the same.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

RUN, STARTED, INCARNATION, ROUND = "tw-run", "tw-started", "tw-incarnation", "server-round"
RECIPE = "tw-recipe"  # the server's resolved config (TOML): a silo needs nothing else to join
SILOS_DIR = "tw-silos-dir"  # simulation only: where the silos keep their state on this machine


@dataclass(frozen=True)
class Stamp:
    run: str
    started: float
    incarnation: int
    round: int

    @classmethod
    def of(cls, config: Any) -> "Stamp":
        return cls(str(config[RUN]), float(config[STARTED]), int(config[INCARNATION]), int(config[ROUND]))


def stale(stamp: Stamp, seen: Stamp | None) -> str | None:
    """Why a message with ``stamp`` must be ignored by a silo that has accepted ``seen`` (None: accept)."""
    if seen is None:
        return None
    if stamp.run != seen.run:
        return "it belongs to an older run" if stamp.started < seen.started else None
    if stamp.incarnation < seen.incarnation:
        return (f"it comes from server start {stamp.incarnation}, and the server has since restarted "
                f"(start {seen.incarnation})")
    if stamp.incarnation == seen.incarnation and stamp.round < seen.round:
        return f"it is for round {stamp.round}, and this server has already moved on to round {seen.round}"
    return None


def newer(stamp: Stamp, seen: Stamp | None) -> Stamp:
    """The stamp to remember after accepting ``stamp``."""
    if seen is None or stamp.run != seen.run or stamp.incarnation > seen.incarnation:
        return stamp
    return stamp if stamp.round > seen.round else seen


def read_seen(path: Path) -> Stamp | None:
    try:
        return Stamp(**json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None


def write_json(path: Path, obj: Any) -> None:
    """Atomically (write a temporary file, fsync, rename): a kill leaves the old or the new file."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(obj) if isinstance(obj, Stamp) else obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
