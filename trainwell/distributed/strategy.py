"""Data-parallel training over the processes torchrun started: the Strategy the Trainer runs with
when WORLD_SIZE > 1 (the one-process strategy is trainwell/engine/strategy.py; same methods).

Each method is one of the few points where a step differs from a single process: the model is
wrapped (DDP or FSDP2), the data source yields this rank's slice of each global batch, the
backward of the last micro-batch reduces gradients, the step's loss and units are reduced, the
gradient norm and evaluation are collective, checkpoints are per-rank shards, and rank 0 alone
writes the run's files. Every collective runs inside ``collective(...)``, so a hung or dead rank
becomes one clear error instead of a hang.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Callable, Iterator, TypeVar

import torch

from trainwell import checkpoint as ckpt
from trainwell.config.schema import Config
from trainwell.distributed import checkpoint as dist_ckpt
from trainwell.distributed import parallel
from trainwell.distributed.reduce import evaluate as evaluate_sharded, mean_over_ranks, reduce_step
from trainwell.distributed.world import (arm_step_timeout, broadcast_object, collective, inject_fault, setup,
                                         teardown)
from trainwell.errors import CheckpointError, TrainwellError

T = TypeVar("T")


class DataParallel:
    def __init__(self, cfg: Config):
        self.world = setup(cfg)  # joins the process group
        self.cfg = cfg
        self.rank, self.size, self.device = self.world.rank, self.world.size, self.world.device
        self.name = self.world.strategy
        self.armed = False  # distributed.timeout_s applies from the first step (world.arm_step_timeout)

    @property
    def main(self) -> bool:
        return self.world.main

    def describe(self, cfg: Config, device: torch.device) -> str | None:
        return (f"{self.size} processes ({self.world.strategy}, {device.type}); each takes "
                f"{cfg.train.batch_size // self.size} of the global batch of {cfg.train.batch_size}")

    def agree(self, decide: Callable[[], T], what: str) -> T:
        """Rank 0's ``decide()`` on every rank (e.g. the precision: the ranks' own probes could differ).
        An error rank 0 raises is raised on every rank, so none waits for an answer that never comes."""
        answer: tuple[str, Any] | None = None
        if self.main:
            try:
                answer = ("ok", decide())
            except TrainwellError as e:
                answer = ("error", e)
        with collective(self.world, what):
            kind, value = broadcast_object(self.world, answer)
        if kind == "error":
            raise value
        return value

    def wrap(self, job: Any, cfg: Config, precision: str) -> Any:
        """This rank's slice of each batch, its own random streams, DDP or FSDP2 around the model
        (FSDP2 gathers parameters in ``precision``'s dtype)."""
        parallel.shard_source(job.source, cfg, self.world)
        parallel.seed_rank(cfg.train.seed, self.rank)
        return parallel.parallelize(job.model, cfg, self.world, precision=precision)

    def checkpoint_state(self, app_state: dict[str, Any], model: torch.nn.Module,
                         optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """Model and optimizer keyed by parameter name, so they save as shards and reshard on load."""
        return dist_ckpt.sharded_app_state(app_state, model, optimizer)

    @contextlib.contextmanager
    def micro_batch(self, step_model: Any, source: Any, step: int, last: bool) -> Iterator[float]:
        """Gradients are reduced in the last micro-batch's backward only (no_sync on the others).

        Yields this rank's weight: its share of the global batch times the world size (1.0 unless
        the last batch of an epoch splits unevenly)."""
        if not self.armed:
            arm_step_timeout(self.world)
            self.armed = True
        inject_fault(self.world, step)  # tests only: TRAINWELL_FAULT=kill|hang:RANK:STEP
        with collective(self.world, f"the gradient all-reduce in the backward of step {step}"), \
                parallel.grad_sync(step_model, self.world, last):
            yield parallel.batch_weight(source)

    def reduce_step(self, loss: float, units: int, stop: bool) -> tuple[float, int, bool]:
        """The same global mean loss, units and stop request on every rank."""
        return reduce_step(self.world, loss, units, stop)

    def clip_grad_norm(self, model: torch.nn.Module, max_norm: float, *, need: bool, step: int) -> float | None:
        if max_norm <= 0 and not need:
            return None
        with collective(self.world, f"the gradient-norm all-reduce of step {step}"):
            norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm if max_norm > 0 else float("inf"))
        full = getattr(norm, "full_tensor", None)  # FSDP: a DTensor reduced over the ranks
        return float(full() if full is not None else norm)

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        return mean_over_ranks(self.world, values)

    def evaluate(self, job: Any, device: torch.device, autocast: Callable[[], Any]) -> dict[str, float]:
        if job.evaluate is not None:  # the job's own evaluation (e.g. episodes), on every rank
            return job.evaluate(job.model)
        return evaluate_sharded(job, device, autocast, self.world)

    def save(self, target: Path, app_state: dict[str, Any], *, step: int, meta: dict[str, Any],
             saver: Any) -> None:
        dist_ckpt.save(target, app_state, self.world, step=step, meta=meta)

    def pick_latest(self, root: Path, pick: Callable[[Path], Path]) -> Path:
        """Rank 0 picks (and verifies) the checkpoint, so every rank restores the same one."""
        def picked() -> str:
            try:
                return str(pick(root))
            except CheckpointError as e:
                return f"error: {e}"

        with collective(self.world, "choosing the checkpoint to resume"):
            path = broadcast_object(self.world, picked() if self.main else None)
        if path.startswith("error: "):
            raise CheckpointError(path[len("error: "):])
        return Path(path)

    def load(self, path: Path, app_state: dict[str, Any], manifest: dict[str, Any]) -> None:
        """A checkpoint of N ranks (each rank reads its rows under this run's sharding) or of one process."""
        with collective(self.world, f"restoring {path}"):
            if manifest.get("layout") == "sharded":
                dist_ckpt.load(path, app_state, self.world, verified=True)
            else:
                dist_ckpt.load_single(path, app_state, self.world, verified=True)

    def final_model(self, job: Any, rebuild: Callable[[], torch.nn.Module], path: Callable[[], Path]
                    ) -> torch.nn.Module:
        """Under FSDP no rank holds the whole model: rank 0 rebuilds a plain one from the final
        checkpoint (as `trainwell generate` would) for sampling and the paradigm's finish."""
        if self.world.strategy != "fsdp":
            return job.model
        model = rebuild()
        model.load_state_dict(ckpt.load_entry(path(), "model"))
        return model

    def close(self, error: BaseException | None = None) -> None:
        teardown(self.world, error)
