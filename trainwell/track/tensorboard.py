"""TensorBoard event-file sink (``events.*`` in the run dir).

We write TensorBoard's own format through ``torch.utils.tensorboard`` rather than inventing
one (DESIGN principle 8), so ``tensorboard --logdir runs/`` works on any run.

torch and tensorboard are imported inside ``__init__`` only: this module may be imported by
code paths (CLI help, recipe validation) that must stay fast and light.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


class TensorBoardSink:
    """Scalars only: one ``add_scalar`` per metric key (``train/loss`` groups under ``train``).

    ``purge_step=S``: the run resumes from the checkpoint at step S, exactly like
    ``MetricsJSONL(resume_step=S)``; events the killed run wrote for steps *after* S are
    hidden so the curves don't show a doubled tail. Note the off-by-one against
    ``SummaryWriter(purge_step=P)``, which hides steps >= P: step S itself was logged before
    the checkpoint and is not logged again, so we pass P = S + 1 to keep it.
    """

    def __init__(self, log_dir: Path, *, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter  # heavy; see module docstring

        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer: Any = SummaryWriter(
            log_dir=str(self.log_dir),
            purge_step=None if purge_step is None else purge_step + 1,
            # Default is 120 s; a killed run would lose up to two minutes of curves.
            flush_secs=10,
        )

    def log(self, step: int, metrics: Mapping[str, float]) -> None:
        if self._writer is None:
            raise ValueError(f"TensorBoardSink({self.log_dir}) is closed")
        for key, value in metrics.items():
            # NaN/Inf are written as-is: the event format stores them faithfully and a
            # diverging curve is exactly what a person opening TensorBoard wants to see.
            self._writer.add_scalar(key, float(value), global_step=int(step))

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
