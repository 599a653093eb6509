"""Optimizers (torch's own update rules) and learning-rate schedules (pure functions of the step)."""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from trainwell.config.schema import OptimConfig, ScheduleConfig


class Eager:
    """Mixin for a torch optimizer: the same methods without the wrappers torch puts on them for
    ``torch.compile`` (``_disable_dynamo`` on ``add_param_group``, ``zero_grad``, ``state_dict`` and
    ``load_state_dict``; ``_use_grad`` around ``step``). Each wrapper imports ``torch._dynamo`` on its
    first call, which costs a process +70 MiB resident (bench/RESULTS.md, issue 13, session 16) and
    does nothing for an eager run. Same update rule, same state dict: only the wrappers are skipped
    (``inspect.unwrap`` follows ``functools.wraps``; a method without one is used as it is). Under
    ``torch.compile`` or with ``differentiable=True`` the step is torch's own, wrapper included.
    """

    add_param_group = inspect.unwrap(torch.optim.Optimizer.add_param_group)
    zero_grad = inspect.unwrap(torch.optim.Optimizer.zero_grad)
    state_dict = inspect.unwrap(torch.optim.Optimizer.state_dict)
    load_state_dict = inspect.unwrap(torch.optim.Optimizer.load_state_dict)

    def step(self, closure: Any = None) -> Any:
        wrapped = super().step  # type: ignore[misc]
        if torch.compiler.is_compiling() or self.defaults.get("differentiable"):  # type: ignore[attr-defined]
            return wrapped(closure)
        with torch.no_grad():  # what the skipped wrapper does for a non-differentiable optimizer
            return inspect.unwrap(wrapped)(self, closure)


class AdamW(Eager, torch.optim.AdamW):
    pass


class SGD(Eager, torch.optim.SGD):
    pass


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
