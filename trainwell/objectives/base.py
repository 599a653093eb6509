"""What every objective returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class LossOutput:
    loss: torch.Tensor  # scalar, mean over `units`
    units: int  # tokens (or samples) the loss averages over: weights evaluation means
    metrics: dict[str, torch.Tensor | float] = field(default_factory=dict)
    processed: int = 0  # tokens/samples the step consumed, for throughput (0 = units)
