"""A stateful source of mini-batches over in-memory samples.

Each epoch visits the training samples in an order drawn from ``(seed, epoch)`` alone, so the
position in the data is two integers, ``(epoch, index)``, exactly as for token windows: the
checkpoint stores them and a resumed run draws the same next batch. The last batch of an epoch
may be smaller (no sample is skipped). With ``world_size`` N, ``batch_size`` is the per-rank
batch and rank r takes the r-th of N even slices of each global batch of N x batch_size.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np
import torch


class IndexBatches:
    """Mini-batches of samples 0 .. n-1, each batch fetched by ``fetch(indices) -> dict of tensors``."""

    def __init__(self, n: int, fetch: Callable[[torch.Tensor], dict[str, torch.Tensor]], *, batch_size: int,
                 seed: int, rank: int = 0, world_size: int = 1):
        if n == 0:
            raise ValueError("no samples")
        self.n, self.fetch = n, fetch
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.index = 0, 0
        self.weight = 1.0  # (share of the global batch in the last batch) x world_size
        self._order_epoch, self._order = -1, torch.empty(0, dtype=torch.long)

    def batches_per_epoch(self) -> int:
        return math.ceil(self.n / (self.batch_size * self.world_size))

    def _order_for(self, epoch: int) -> torch.Tensor:
        if self._order_epoch != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._order, self._order_epoch = torch.randperm(self.n, generator=g), epoch
        return self._order

    def __iter__(self) -> "IndexBatches":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.index >= self.batches_per_epoch():
            self.epoch, self.index = self.epoch + 1, 0
        order = self._order_for(self.epoch)
        if self.world_size == 1:
            idx = order[self.index * self.batch_size:(self.index + 1) * self.batch_size]
        else:
            # this rank's share of the global batch; the last one of an epoch may be short, so
            # split it as evenly as possible and weight each rank's mean loss by its share
            g = self.batch_size * self.world_size
            whole = order[self.index * g:(self.index + 1) * g]
            idx = whole.tensor_split(self.world_size)[self.rank]
            self.weight = len(idx) * self.world_size / len(whole)
            if len(idx) == 0:  # fewer samples than ranks: a stand-in sample with weight 0 keeps ranks in step
                idx = whole[:1]
        self.index += 1
        return self.fetch(idx)

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def ArrayBatches(x: np.ndarray, y: np.ndarray, *, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1) -> IndexBatches:
    """Batches {"input": x[idx], "target": y[idx]} of in-memory arrays (N, ...) and (N,)."""
    if len(x) == 0:
        raise ValueError("no samples")
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return IndexBatches(len(xt), lambda idx: {"input": xt[idx], "target": yt[idx]}, batch_size=batch_size,
                        seed=seed, rank=rank, world_size=world_size)


def fixed_batches(x: np.ndarray, y: np.ndarray, batch_size: int) -> list[dict[str, torch.Tensor]]:
    """The whole split in order, for evaluation."""
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    return [{"input": xt[i:i + batch_size], "target": yt[i:i + batch_size]}
            for i in range(0, len(xt), batch_size)]
