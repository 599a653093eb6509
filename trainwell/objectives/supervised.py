"""Supervised losses: classification (cross-entropy) and regression (mean squared error)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainwell.objectives.base import LossOutput


def classify_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor],
                  label_smoothing: float = 0.0) -> LossOutput:
    logits = model(batch["input"])  # (B, classes)
    target = batch["target"]
    loss = F.cross_entropy(logits.float(), target, label_smoothing=label_smoothing)
    accuracy = (logits.argmax(dim=-1) == target).float().mean()
    return LossOutput(loss=loss, units=target.numel(), metrics={"accuracy": accuracy})


def regress_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
    pred = model(batch["input"]).squeeze(-1).float()  # (B,)
    return LossOutput(loss=F.mse_loss(pred, batch["target"]), units=batch["target"].numel())
