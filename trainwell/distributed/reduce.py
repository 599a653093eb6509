"""Metrics that are the same on every rank: the step's loss and units, and evaluation."""

from __future__ import annotations

from typing import Any, Callable

import torch
import torch.distributed as dist

from trainwell.distributed.world import World, collective


def reduce_step(world: World, loss: float, units: int, stop: bool) -> tuple[float, int, bool]:
    """One all-reduce per step of [weighted loss, units, stop flag].

    ``loss`` is this rank's mean over micro-batches of (mean loss x weight), so the ranks' mean is
    the mean loss over the global batch. Every rank gets the same loss (so all of them decide
    alike on divergence) and the same stop flag (a signal that reached one rank stops all of
    them at the same step).
    """
    t = torch.tensor([loss, float(units), float(stop)], dtype=torch.float64)
    with collective(world, "the loss all-reduce after a step"):
        dist.all_reduce(t)
    return float(t[0]) / world.size, int(t[1]), bool(t[2] > 0)


def mean_over_ranks(world: World, values: dict[str, float]) -> dict[str, float]:
    """The ranks' mean of each value (the objective's metrics on the last micro-batch, at log steps)."""
    if not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    with collective(world, "the train-metrics all-reduce"):
        dist.all_reduce(t)
    return {k: float(v) / world.size for k, v in zip(keys, t.tolist())}


def evaluate(job: Any, device: torch.device, autocast: Callable[[], Any], world: World) -> dict[str, float]:
    """Like ``engine.job.evaluate`` with the eval batches dealt round-robin to the ranks.

    ``job``: the engine's Job (model, eval_batches, objective, eval_extras). Every rank runs the same
    number of forward passes (FSDP gathers parameters collectively in each one), padding with a
    repeat of its first batch counted with weight 0.
    """
    model, batches = job.model, job.eval_batches
    was_training = model.training
    model.eval()
    mine = batches[world.rank::world.size]
    rounds = -(-len(batches) // world.size)
    sums: dict[str, float] = {}
    units = 0.0
    with torch.no_grad():
        for i in range(rounds):
            real = i < len(mine)
            batch = mine[i] if real else batches[0]
            with autocast():
                out = job.objective(model, {k: v.to(device, non_blocking=True) for k, v in batch.items()})
            weight = out.units if real else 0
            for key, value in {"loss": out.loss, **out.metrics}.items():
                sums[key] = sums.get(key, 0.0) + float(value) * weight
            units += weight
    model.train(was_training)
    keys = sorted(sums)
    t = torch.tensor([sums[k] for k in keys] + [units], dtype=torch.float64)
    with collective(world, "the evaluation all-reduce"):
        dist.all_reduce(t)
    total = max(float(t[-1]), 1.0)
    metrics = {f"val/{k}": float(v) / total for k, v in zip(keys, t[:-1].tolist())}
    metrics.update(job.eval_extras(metrics))
    return metrics
