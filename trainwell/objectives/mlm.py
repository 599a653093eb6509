"""Masked-token prediction (BERT, Devlin et al. 2019, section 3.1).

The masking happens in the data source (``trainwell.data.masking``), so the objective stays a plain
function: cross-entropy on the chosen positions only (targets elsewhere are -100).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainwell.objectives.base import LossOutput

from trainwell.data.masking import IGNORE


def mlm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
    logits = model(batch["input"])  # (B, T, V+1)
    target = batch["target"]
    chosen = target != IGNORE
    picked = logits[chosen].float()  # (M, V+1): only the masked positions cost softmax work
    loss = F.cross_entropy(picked, target[chosen])
    accuracy = (picked.argmax(dim=-1) == target[chosen]).float().mean()
    return LossOutput(loss=loss, units=int(chosen.sum()), metrics={"accuracy": accuracy},
                      processed=target.numel())
