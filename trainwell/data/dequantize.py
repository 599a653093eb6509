"""Uniform dequantization of integer pixels, as a stateful source wrapper.

Convention: a pixel with integer value ``k`` in ``0..levels-1`` becomes ``k + u`` with
``u ~ U[0, 1)``, so a model of the continuous density on ``[0, levels)^D`` bounds the discrete
log-likelihood from below: ``log P(k) >= E_u[log p(k + u)]`` (Theis et al. 2016).

The noise for batch ``index`` of epoch ``epoch`` comes from a generator seeded by
``(seed, epoch, index)``, so the wrapper adds no state of its own: restoring the wrapped
:class:`~trainwell.data.samples.ArrayBatches` restores the next noisy batch bit for bit.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


def noise_key(seed: int, epoch: int, index: int, rank: int = 0) -> int:
    key = (seed * 1_000_003 + epoch) * 1_000_003 + index
    return (key * 1_000_003 + rank if rank else key) % 2**63  # data-parallel ranks draw independently


class Dequantized:
    """Wrap an ``ArrayBatches`` of integer-valued inputs: each batch gets fresh uniform noise."""

    def __init__(self, batches: Any, *, seed: int):
        self.batches, self.seed = batches, seed

    def batches_per_epoch(self) -> int:
        return self.batches.batches_per_epoch()

    def __iter__(self) -> "Dequantized":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        batch = next(self.batches)
        # the position of the batch just drawn (ArrayBatches advances index after drawing)
        g = torch.Generator().manual_seed(noise_key(self.seed, self.batches.epoch, self.batches.index - 1,
                                                     self.batches.rank))
        x = batch["input"]
        return {"input": x + torch.rand(x.shape, generator=g, dtype=x.dtype)}

    def state_dict(self) -> dict[str, Any]:
        return self.batches.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.batches.load_state_dict(state)


def dequantize_fixed(x: np.ndarray, seed: int) -> np.ndarray:
    """One fixed noise draw (for validation and test), float64 so scikit-learn sees the same numbers."""
    return x.astype(np.float64) + np.random.default_rng(seed).random(x.shape)
