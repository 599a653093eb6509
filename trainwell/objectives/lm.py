"""Next-token prediction: mean cross-entropy of the model's logits against shifted targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainwell.objectives.base import LossOutput


def lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
    logits = model(batch["input"])  # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), batch["target"].flatten())
    return LossOutput(loss=loss, units=batch["target"].numel())
