"""Checkpoint in the background: stage (copy) synchronously, write on one worker thread.

Staging is the only part that must pause training: once tensors are copied to private CPU
memory the optimizer may keep mutating parameters while the write (the slow, disk-bound
part) runs. One write in flight at most, so checkpoints land in order and memory for only
one extra snapshot is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any

from trainwell.checkpoint.store import Stateful, stage, write


class AsyncSaver:
    """``save()`` returns after staging; ``wait()`` re-raises a failed write in the caller."""

    def __init__(self) -> None:
        # Executor threads are joined at interpreter exit, so a pending write is finished
        # (not torn) even if the training loop returns or raises right after save().
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trainwell-ckpt")
        self._pending: Future[Path] | None = None

    def save(
        self,
        ckpt_dir: Path,
        app_state: Mapping[str, Stateful],
        *,
        step: int,
        meta: dict[str, Any] | None = None,
    ) -> Path:
        """Wait for the previous write, stage ``app_state`` now, write it in the background."""
        self.wait()
        staged = stage(app_state)
        self._pending = self._pool.submit(write, staged, Path(ckpt_dir), step=step, meta=meta)
        return Path(ckpt_dir)

    def wait(self) -> Path | None:
        """Block until the pending write is done; return its path or raise its error."""
        pending, self._pending = self._pending, None
        return None if pending is None else pending.result()

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._pool.shutdown(wait=True)

    def __enter__(self) -> AsyncSaver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
