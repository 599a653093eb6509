"""A stateful source of (input, target) windows over a token array.

Each epoch cuts the token stream into non-overlapping windows of ``context + 1`` tokens,
starting at a random offset (so windows straddle different boundaries each epoch), and visits
them in a random order. Offset and order are derived from ``(seed, epoch)`` alone, so the
whole position in the data is two integers, ``(epoch, index)``: that is what a checkpoint
stores, and resuming rebuilds exactly the same next batch. ``rank``/``world_size`` give each
data-parallel process a disjoint slice of every global batch.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch


class TokenWindows:
    def __init__(self, tokens: np.ndarray, *, context: int, batch_size: int, seed: int,
                 rank: int = 0, world_size: int = 1):
        if len(tokens) < context + 2:
            raise ValueError("token array shorter than one window")
        self.tokens = torch.from_numpy(tokens.astype(np.int32))  # int32 halves memory; batches are cast to int64
        self.context, self.batch_size, self.seed = context, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.index = 0, 0  # position: batch `index` of epoch `epoch`
        self._order: torch.Tensor | None = None
        self._order_epoch = -1

    # -- layout of one epoch
    def _layout(self, epoch: int) -> tuple[int, torch.Tensor]:
        if self._order_epoch != epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            offset = int(torch.randint(self.context, (1,), generator=g))
            n = (len(self.tokens) - 1 - offset) // self.context
            self._offset, self._order, self._order_epoch = offset, torch.randperm(n, generator=g), epoch
        return self._offset, self._order  # type: ignore[return-value]

    def batches_per_epoch(self) -> int:
        n = (len(self.tokens) - 1 - (self.context - 1)) // self.context  # worst-case offset
        return n // (self.batch_size * self.world_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.index >= self.batches_per_epoch():
            self.epoch, self.index = self.epoch + 1, 0
        offset, order = self._layout(self.epoch)
        global_b = self.batch_size * self.world_size
        start = self.index * global_b + self.rank * self.batch_size
        starts = offset + order[start:start + self.batch_size] * self.context  # (B,)
        idx = starts[:, None] + torch.arange(self.context + 1)  # (B, T+1)
        chunk = self.tokens[idx].long()
        self.index += 1
        return {"input": chunk[:, :-1], "target": chunk[:, 1:]}

    # -- Stateful
    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "index": self.index, "seed": self.seed,
                "context": self.context, "batch_size": self.batch_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.index = int(state["epoch"]), int(state["index"])


def eval_batches(tokens: np.ndarray, *, context: int, batch_size: int, batches: int
                 ) -> list[dict[str, torch.Tensor]]:
    """A fixed set of validation windows spread evenly over the whole split (no randomness)."""
    t = torch.from_numpy(tokens.astype(np.int64))
    n_windows = (len(t) - 1) // context
    want = min(batches * batch_size, n_windows)
    starts = torch.linspace(0, (n_windows - 1) * context, want).long()
    out = []
    for i in range(0, want, batch_size):
        idx = starts[i:i + batch_size, None] + torch.arange(context + 1)
        chunk = t[idx]
        out.append({"input": chunk[:, :-1], "target": chunk[:, 1:]})
    return out
