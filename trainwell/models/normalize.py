"""Running mean/variance normalisation (observations, and rewards in RL).

The statistics are buffers, so they travel with the model's state_dict: a checkpoint, ``trainwell
eval`` and an exported policy all normalise exactly as training did. They change only when the
owner calls :meth:`RunningNorm.update`, never in ``forward``.
"""

from __future__ import annotations

import torch
import torch.nn as nn


class RunningNorm(nn.Module):
    def __init__(self, shape: tuple[int, ...] = (), clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.clip, self.eps = clip, eps
        self.register_buffer("mean", torch.zeros(shape, dtype=torch.float64))
        self.register_buffer("var", torch.ones(shape, dtype=torch.float64))
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))

    @torch.no_grad()
    def update(self, x: torch.Tensor) -> None:
        """Merge a batch (B, *shape) into the statistics (Chan et al.'s parallel variance formula)."""
        x = x.detach().to(torch.float64).reshape(-1, *self.mean.shape)
        n = x.shape[0]
        if n == 0:
            return
        b_mean, b_var = x.mean(0), x.var(0, unbiased=False)
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta**2 * self.count * n / total
        self.mean.add_(delta * n / total)
        self.var.copy_(m2 / total)
        self.count.fill_(total)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, *shape) -> normalised and clipped to +-clip; identity until the first update."""
        if self.count.item() == 0:
            return x
        z = (x - self.mean.to(x.dtype)) / torch.sqrt(self.var.to(x.dtype) + self.eps)
        return z.clamp(-self.clip, self.clip)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """Divide by the running standard deviation only (reward scaling keeps the sign and zero)."""
        if self.count.item() == 0:
            return x
        return x / torch.sqrt(self.var.to(x.dtype) + self.eps)
