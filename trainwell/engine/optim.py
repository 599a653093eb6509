"""Optimizers (torch's own update rules) and learning-rate schedules (pure functions of the step)."""

from __future__ import annotations

import math

import torch

from trainwell.config.schema import OptimConfig, ScheduleConfig
from trainwell.engine.eager_optim import SGD, AdamW


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, device: torch.device) -> torch.optim.Optimizer:
    # Decay matrices only: biases and norm gains have no scale to regularise.
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay},
              {"params": no_decay, "weight_decay": 0.0}]
    if cfg.name == "muon":  # Muon for the transformer blocks' matrices, AdamW (these groups' rules) for the rest
        from trainwell.engine.muon import build_muon

        return build_muon(model, cfg, device)
    if cfg.name == "adamw":
        # fused kernels exist for CPU and CUDA in torch >= 2.4: one kernel per step, not one per tensor.
        return AdamW(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps,
                                 fused=device.type in ("cpu", "cuda"))
    return SGD(groups, lr=cfg.lr, momentum=cfg.momentum, foreach=True)


def lr_factor(step: int, total: int, cfg: ScheduleConfig) -> float:
    """Multiplier on optim.lr for optimizer step ``step`` (0-based) of ``total``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    if cfg.name == "constant":
        return 1.0
    lo = cfg.min_lr_ratio
    if cfg.name == "wsd":  # warmup-stable-decay (trapezoidal): flat, then linear to lo at the end
        decay_start = max(cfg.warmup_steps, total - round(cfg.decay_fraction * total))
        if step < decay_start:
            return 1.0
        return 1.0 - (1.0 - lo) * min(1.0, (step + 1 - decay_start) / max(1, total - decay_start))
    progress = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    if cfg.name == "linear":
        return 1.0 - (1.0 - lo) * progress
    return lo + (1.0 - lo) * 0.5 * (1.0 + math.cos(math.pi * progress))


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set optim.lr x schedule; a group with its own base rate (Muon's) keeps its ratio to it."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group.get("lr_scale", 1.0)
