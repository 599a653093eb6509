"""Loop counters and the run directory."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainwell.config.schema import Config
from trainwell.errors import TrainwellError


@dataclass
class LoopState:
    """Counters that must survive a restart (Stateful)."""

    step: int = 0  # optimizer steps completed
    units_seen: int = 0  # tokens/samples consumed by training
    train_seconds: float = 0.0  # wall time spent in training steps, summed over restarts
    best_val: float | None = None
    best_step: int | None = None

    def state_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key, value in state.items():
            setattr(self, key, value)


def seed_everything(seed: int) -> None:
    """One seed for Python, NumPy and torch (initialisation, data order, dropout)."""
    import random

    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def has_checkpoints(run_dir: Path) -> bool:
    ckpts = run_dir / "checkpoints"
    return ckpts.is_dir() and any(p.name.startswith("step-") for p in ckpts.iterdir())


def new_run_dir(cfg: Config, requested: str | None, recipe_name: str) -> Path:
    """Pick and create the directory for a new run; refuse to mix two runs in one folder."""
    if requested:
        run_dir = Path(requested)
        if run_dir.exists() and not run_dir.is_dir():
            raise TrainwellError(f"--run-dir {run_dir} is a file, not a directory; pass a folder path.")
        if run_dir.is_dir() and has_checkpoints(run_dir):
            raise TrainwellError(f"run directory {run_dir} already holds a run with checkpoints; continue it "
                                 f"with `trainwell train --resume {run_dir}` or pass another --run-dir.")
    else:
        name = cfg.run.name or recipe_name
        run_dir = Path(cfg.run.dir) / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
        n = 1
        while run_dir.exists():
            n += 1
            run_dir = run_dir.with_name(f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{n}")
    try:
        (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrainwellError(f"cannot create run directory {run_dir}: {e.strerror}; pass a writable "
                             f"--run-dir.") from None
    return run_dir
