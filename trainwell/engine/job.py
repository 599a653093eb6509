"""The Job: everything the loop needs beyond the optimizer (model, source, objective, evaluation).

Paradigms differ only in the builder that makes their Job (trainwell/paradigms registers them
by data source name); the loop itself never changes and imports no paradigm.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from trainwell.objectives.base import LossOutput


@dataclass
class Job:
    model: torch.nn.Module  # the plain module: its state_dict is what checkpoints hold
    source: Any  # Stateful iterator of batches (dicts of CPU tensors)
    objective: Callable[[torch.nn.Module, dict[str, torch.Tensor]], LossOutput]
    eval_batches: list[dict[str, torch.Tensor]]
    units: str = "tokens"  # what LossOutput.units counts, for throughput
    flops_per_unit: float = 0.0  # training FLOPs per unit, for MFU
    batches_per_epoch: int = 0
    facts: dict[str, Any] = field(default_factory=dict)  # shown in the summary
    eval_extras: Callable[[dict[str, float]], dict[str, float]] = lambda m: {}
    sample: Callable[..., list[str]] | None = None  # (model, prompt, n, length, temperature, top_k, seed, stop=())
    finish: Callable[[torch.nn.Module, Any], dict[str, Any]] | None = None  # (model, run_dir) -> summary extras
    evaluate: Callable[[torch.nn.Module], dict[str, float]] | None = None  # replaces eval_batches (RL episodes)
    train_metrics: Callable[[], dict[str, float]] | None = None  # extra values logged with train/loss
    total_steps: int | None = None  # optimizer steps implied by the data (RL: env steps), over train.steps
    best_metric: str = "val/loss"  # evaluation metric that picks the best checkpoint (keep_best)
    best_mode: str = "min"  # or "max" (RL: val/return)
    encode: Callable[[str], list[int]] | None = None
    decode: Callable[[list[int]], str] | None = None
    extra_evals: dict[str, list[dict[str, torch.Tensor]]] = field(default_factory=dict)  # name -> batches
    eval_samples: Callable[[torch.nn.Module], list[str]] | None = None  # (model) -> texts, at every evaluation


def total_steps(cfg: Any, job: Job) -> int:
    """Optimizer steps of the whole run: the Job's own count (RL), train.epochs, or train.steps."""
    if job.total_steps:
        return job.total_steps
    if cfg.train.epochs:
        return max(1, cfg.train.epochs * job.batches_per_epoch // cfg.train.grad_accum)
    return cfg.train.steps


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def evaluate(job: Job, device: torch.device, autocast: Callable[[], Any]) -> dict[str, float]:
    """Unit-weighted means of the loss and the objective's metrics over the eval batches."""
    if job.evaluate is not None:
        return job.evaluate(job.model)
    model = job.model
    was_training = model.training
    model.eval()
    metrics = mean_metrics(job, job.eval_batches, "val", device, autocast)
    metrics.update(job.eval_extras(metrics))
    for name, batches in job.extra_evals.items():  # e.g. retain/loss: forgetting of pretraining data
        metrics.update(mean_metrics(job, batches, name, device, autocast))
    model.train(was_training)
    return metrics


def mean_metrics(job: Job, batches: list[dict[str, torch.Tensor]], prefix: str, device: torch.device,
                 autocast: Callable[[], Any]) -> dict[str, float]:
    sums: dict[str, float] = {}
    units = 0
    with torch.no_grad():
        for batch in batches:
            with autocast():
                out = job.objective(job.model, to_device(batch, device))
            for key, value in {"loss": out.loss, **out.metrics}.items():
                sums[key] = sums.get(key, 0.0) + float(value) * out.units
            units += out.units
    return {f"{prefix}/{k}": v / max(units, 1) for k, v in sums.items()}
