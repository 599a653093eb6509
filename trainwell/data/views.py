"""Two random augmentations ("views") of each image, for contrastive learning, as a stateful source.

The augmentation of batch ``index`` of epoch ``epoch`` is drawn from a generator seeded by
``(seed, epoch, index)`` (as :mod:`trainwell.data.masking` does), so the wrapper adds no state of
its own: restoring the underlying :class:`~trainwell.data.samples.ArrayBatches` position restores
the next pair of views bit for bit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Augment:
    """Small-image augmentations: a random affine map, then Gaussian noise, then pixel dropout.

    ``background`` is the value of an empty pixel (after standardisation), used for pixels that
    the shift/rotation uncovers and for dropped pixels.
    """

    rotate_deg: float = 15.0  # rotation drawn from [-r, r]
    scale: float = 0.1  # zoom drawn from [1 - s, 1 + s]
    shift_px: float = 1.0  # translation drawn from [-p, p] pixels on each axis
    noise: float = 0.1  # std of additive Gaussian noise (in standardised units)
    pixel_drop: float = 0.1  # share of pixels set to the background
    background: float = 0.0

    def __call__(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        """x: (B, C, H, W) -> (B, C, H, W), all randomness from ``g``."""
        b, _, h, w = x.shape
        angle = (torch.rand(b, generator=g) * 2 - 1) * math.radians(self.rotate_deg)
        zoom = 1 + (torch.rand(b, generator=g) * 2 - 1) * self.scale
        shift = (torch.rand(b, 2, generator=g) * 2 - 1) * self.shift_px
        shift = shift * torch.tensor([2.0 / w, 2.0 / h])  # pixels -> affine_grid's [-1, 1] coordinates
        cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom  # output -> input sampling map
        theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                             torch.stack([sin, cos, shift[:, 1]], 1)], 1)  # (B, 2, 3)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        # sample x - background with zero padding, so uncovered pixels become the background
        out = F.grid_sample(x - self.background, grid, align_corners=False, padding_mode="zeros")
        out = out + self.background + self.noise * torch.randn(out.shape, generator=g)
        keep = torch.rand(out.shape, generator=g) >= self.pixel_drop
        return torch.where(keep, out, torch.full_like(out, self.background))


def position_seed(seed: int, epoch: int, index: int, rank: int = 0) -> int:
    key = (seed * 1_000_003 + epoch) * 1_000_003 + index
    return (key * 1_000_003 + rank if rank else key) % 2**63  # data-parallel ranks draw independently


class PairedViews:
    """Wrap an ArrayBatches source: each batch becomes {"view1", "view2"}; labels are dropped."""

    def __init__(self, batches: Any, augment: Augment, *, seed: int):
        self.batches, self.augment, self.seed = batches, augment, seed

    def batches_per_epoch(self) -> int:
        return self.batches.batches_per_epoch()

    def __iter__(self) -> "PairedViews":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        x = next(self.batches)["input"]  # (B, C, H, W); the position of this batch is (epoch, index - 1)
        g = torch.Generator().manual_seed(position_seed(self.seed, self.batches.epoch, self.batches.index - 1,
                                                         self.batches.rank))
        return {"view1": self.augment(x, g), "view2": self.augment(x, g)}

    def state_dict(self) -> dict[str, Any]:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state)


def fixed_views(x: torch.Tensor, augment: Augment, *, batch_size: int, seed: int) -> list[dict[str, torch.Tensor]]:
    """Augment the evaluation images once, with a fixed seed, so every evaluation sees the same views."""
    g = torch.Generator().manual_seed(seed)
    return [{"view1": augment(x[i:i + batch_size], g), "view2": augment(x[i:i + batch_size], g)}
            for i in range(0, len(x), batch_size)]
