"""Supervised fine-tuning on prompt/completion pairs: next-token cross-entropy on the completion
tokens only (the prompt is context, not a target)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainwell.objectives.base import LossOutput
from trainwell.objectives.sequence import shifted


def sft_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
    inputs, targets, m = shifted(batch["ids"], batch["mask"])
    logits = model(inputs)  # (B, T-1, V)
    ce = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), reduction="none").view_as(m)
    n = m.sum()
    loss = (ce * m).sum() / n.clamp_min(1)
    with torch.no_grad():
        accuracy = ((logits.argmax(-1) == targets).float() * m).sum() / n.clamp_min(1)
    return LossOutput(loss=loss, units=int(n), metrics={"mean_token_accuracy": accuracy},
                      processed=int(batch["ids"].numel()))
