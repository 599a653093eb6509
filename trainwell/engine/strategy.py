"""How a training step runs: in one process, or data-parallel over several (trainwell/distributed).

The Trainer picks a strategy once, before the loop (:func:`choose`), and the loop calls the same
few methods whatever it is: the step loop has no branch on the world size. A new way of running
(tensor or pipeline parallel, a federated client, ...) is one more class with these methods.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator, Protocol, TypeVar

import torch

from trainwell import checkpoint as ckpt
from trainwell.config import Config
from trainwell.engine.job import Job, evaluate
from trainwell.engine.wrap import maybe_compile

T = TypeVar("T")


class Strategy(Protocol):
    name: str  # recorded in meta.json: "none" (one process), "ddp", "fsdp", ...
    rank: int
    size: int  # processes that train together
    device: torch.device | None  # the device this process must use (None: train.device decides)

    @property
    def main(self) -> bool: ...  # the one process that writes logs, plots, progress and the summary

    def describe(self, cfg: Config, device: torch.device) -> str | None: ...
    def agree(self, decide: Callable[[], T], what: str) -> T: ...  # rank 0 decides, every rank gets it
    # what the objective calls in a training step; ``precision``: the run's resolved precision name
    def wrap(self, job: Job, cfg: Config, precision: str) -> Any: ...
    def checkpoint_state(self, app_state: dict[str, Any], model: torch.nn.Module,
                         optimizer: torch.optim.Optimizer) -> dict[str, Any]: ...
    def micro_batch(self, step_model: Any, source: Any, step: int, last: bool) -> ContextManager[float]: ...
    def reduce_step(self, loss: float, units: int, stop: bool) -> tuple[float, int, bool]: ...
    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float, *, need: bool, step: int) -> float | None: ...
    def mean(self, values: dict[str, float]) -> dict[str, float]: ...
    def evaluate(self, job: Job, device: torch.device, autocast: Callable[[], Any]) -> dict[str, float]: ...
    def save(self, target: Path, app_state: dict[str, Any], *, step: int, meta: dict[str, Any],
             saver: Any) -> None: ...
    def pick_latest(self, root: Path, pick: Callable[[Path], Path]) -> Path: ...
    def load(self, path: Path, app_state: dict[str, Any], manifest: dict[str, Any]) -> None: ...
    def final_model(self, job: Job, rebuild: Callable[[], torch.nn.Module], path: Callable[[], Path]
                    ) -> torch.nn.Module: ...
    def close(self, error: BaseException | None = None) -> None: ...


class OneProcess:
    """Everything in this process: the step is the plain step (compiled if train.compile)."""

    name, rank, size, device = "none", 0, 1, None

    @property
    def main(self) -> bool:
        return True

    def describe(self, cfg: Config, device: torch.device) -> str | None:
        return None

    def agree(self, decide: Callable[[], T], what: str) -> T:
        return decide()

    def wrap(self, job: Job, cfg: Config, precision: str) -> Any:
        return maybe_compile(job.model, cfg.train)

    def checkpoint_state(self, app_state: dict[str, Any], model: torch.nn.Module,
                         optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        return app_state

    @contextlib.contextmanager
    def micro_batch(self, step_model: Any, source: Any, step: int, last: bool) -> Iterator[float]:
        yield 1.0  # the weight of this process's loss: all of the batch

    def reduce_step(self, loss: float, units: int, stop: bool) -> tuple[float, int, bool]:
        return loss, units, stop

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float, *, need: bool, step: int) -> float | None:
        """Clip the global gradient norm (if configured) and return it; measure it only when logged."""
        if max_norm <= 0 and not need:
            return None
        return float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else float("inf")))

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        return values

    def evaluate(self, job: Job, device: torch.device, autocast: Callable[[], Any]) -> dict[str, float]:
        return evaluate(job, device, autocast)

    def save(self, target: Path, app_state: dict[str, Any], *, step: int, meta: dict[str, Any],
             saver: Any) -> None:
        if saver is not None:  # staged now, written by a background thread
            saver.save(target, app_state, step=step, meta=meta)
        else:
            ckpt.save(target, app_state, step=step, meta=meta)

    def pick_latest(self, root: Path, pick: Callable[[Path], Path]) -> Path:
        return pick(root)

    def load(self, path: Path, app_state: dict[str, Any], manifest: dict[str, Any]) -> None:
        if manifest.get("layout") == "sharded":  # written by several ranks: read the full tensors
            from trainwell.distributed import checkpoint as dist_ckpt
            from trainwell.distributed.world import World

            state = dist_ckpt.sharded_app_state(app_state, app_state["model"].model, app_state["optimizer"])
            dist_ckpt.load(path, state, World(), verified=True)
        else:
            ckpt.load(path, app_state, verified=True)

    def final_model(self, job: Job, rebuild: Callable[[], torch.nn.Module], path: Callable[[], Path]
                    ) -> torch.nn.Module:
        return job.model

    def close(self, error: BaseException | None = None) -> None:
        pass


def choose(cfg: Config) -> Strategy:
    """One process, or (started by torchrun with WORLD_SIZE > 1) data-parallel over all of them:
    joins the process group here."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return OneProcess()
    from trainwell.distributed.strategy import DataParallel

    return DataParallel(cfg)
