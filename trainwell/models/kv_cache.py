"""Cached keys and values for incremental decoding of a batch of left-padded sequences.

Layout: every row shares one slot axis. Row r's prompt is left-padded by ``pad[r]`` slots, so all
rows write their next token into the same slot and one decode step is one batched forward of
shape (B, 1). Each row's positions count from its own first real token (slot - pad[r]), and an
additive key mask (-inf on pad slots) hides the padding, so a row's logits are those it would get
alone (up to float rounding).

    kt[layer]: (B, heads, head_dim, capacity)  keys, stored transposed: a decode step's q @ K^T is
                                               then a batched matmul over contiguous rows
    v[layer]:  (B, heads, capacity, head_dim)  values; slots [0, length) are filled
"""

from __future__ import annotations

import torch


class KVCache:
    def __init__(self, *, layers: int, batch: int, heads: int, head_dim: int, capacity: int,
                 pad: torch.Tensor, dtype: torch.dtype, device: torch.device):
        self.capacity, self.length = capacity, 0
        self.kt = [torch.empty(batch, heads, head_dim, capacity, dtype=dtype, device=device) for _ in range(layers)]
        self.v = [torch.empty(batch, heads, capacity, head_dim, dtype=dtype, device=device) for _ in range(layers)]
        self._rows(pad.to(device), dtype)
        # set by begin() for the chunk being written, read by every layer
        self.positions = self._pos[:, :0]  # (B, T) position of each new token in its row
        self.mask: torch.Tensor | None = None  # (B, 1, T, length + T) additive: 0 or -inf; None = no padding
        self.causal = False  # the chunk attends causally among itself (a multi-token chunk)
        self.rope: tuple[torch.Tensor, torch.Tensor] | None = None  # (B, 1, T, head_dim/2) cos, sin (rotary)
        self._start = 0

    def _rows(self, pad: torch.Tensor, dtype: torch.dtype) -> None:
        """Per-row tables, computed once: positions of every slot and the additive pad mask."""
        self.pad = pad  # (B,) left-padding slots per row
        slots = torch.arange(self.capacity, device=pad.device)
        self._pos = (slots[None, :] - pad[:, None]).clamp_min(0)  # (B, capacity)
        pad_slot = slots[None, :] < pad[:, None]
        self._bias = torch.zeros(pad_slot.shape, dtype=dtype, device=pad.device).masked_fill(pad_slot, float("-inf"))
        # from pad alone (not from the slot tables), so a simulated cache (trainwell/engine/simulate.py)
        # whose tables are fake still knows which rows are padded
        self.padded = bool((pad > 0).any()) and self.capacity > 0
        self.min_pad = int(pad.min()) if len(pad) else 0

    @property
    def longest_row(self) -> int:
        """Real tokens held by the longest row (the one with the least padding)."""
        return self.length - self.min_pad

    def begin(self, T: int) -> None:
        """Prepare positions and the attention mask for T new tokens at slots [length, length + T)."""
        if self.length + T > self.capacity:
            raise ValueError(f"KV cache holds {self.capacity} slots; {self.length} used, {T} more requested")
        s0 = self._start = self.length
        end = s0 + T
        self.positions = self._pos[:, s0:end]
        self.causal = T > 1
        if T == 1:  # one query sees every slot so far; only padding needs masking
            self.mask = self._bias[:, None, None, :end] if self.padded else None
            return
        if not self.padded and s0 == 0:  # a first unpadded chunk: plain causal attention
            self.mask = None
            return
        slots = torch.arange(end, device=self.pad.device)
        q_slots = slots[s0:]
        future = slots[None, :] > q_slots[:, None]  # (T, end)
        mask = self._bias[:, None, None, :end].masked_fill(future[None, None], float("-inf"))  # (B, 1, T, end)
        # a pad query sees no real key; letting it see itself keeps its softmax finite (a row of -inf
        # gives NaN, and a NaN value would leak into real rows through 0 * NaN in the next matmul)
        self.mask = mask.masked_fill((slots[None, :] == q_slots[:, None])[None, None], 0.0)
        self.causal = False

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write this chunk's (B, H, T, D) keys/values of ``layer``; return K^T (B, H, D, S) and V
        (B, H, S, D) of every slot so far (S = length + T)."""
        s0, end = self._start, self._start + k.shape[2]
        self.kt[layer][..., s0:end] = k.transpose(-1, -2)
        self.v[layer][:, :, s0:end] = v
        return self.kt[layer][..., :end], self.v[layer][:, :, :end]

    def advance(self, T: int) -> None:
        self.length += T

    def keep_rows(self, rows: torch.Tensor) -> None:
        """Drop finished rows: keep only ``rows`` (indices) of every tensor, in that order."""
        self.kt = [t.index_select(0, rows) for t in self.kt]
        self.v = [t.index_select(0, rows) for t in self.v]
        self._rows(self.pad.index_select(0, rows), self._bias.dtype)
