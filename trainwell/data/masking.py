"""BERT-style masking of token windows, as a stateful source wrapper.

The random choices for batch ``index`` of epoch ``epoch`` come from a generator seeded by
``(seed, epoch, index)``, so the wrapper adds no state of its own: resuming the underlying
window source resumes the masking exactly.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE = -100  # target value of positions that are not predicted (cross_entropy's ignore_index)


def mask_tokens(ids: torch.Tensor, *, mask_id: int, vocab_size: int, prob: float, replace_mask: float,
                replace_random: float, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Choose ``prob`` of the positions; of those, ``replace_mask`` become the mask token,
    ``replace_random`` a random token, the rest stay. Returns (inputs, targets); targets hold the
    original token at chosen positions and -100 elsewhere."""
    chosen = torch.rand(ids.shape, generator=generator) < prob
    roll = torch.rand(ids.shape, generator=generator)
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[chosen & (roll < replace_mask)] = mask_id
    swap = chosen & (roll >= replace_mask) & (roll < replace_mask + replace_random)
    inputs[swap] = random_ids[swap]
    targets = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    return inputs, targets


class MaskedWindows:
    """Wrap a window source: inputs get masked, targets keep the original token where chosen."""

    def __init__(self, windows: Any, *, mask_id: int, vocab_size: int, prob: float, replace_mask: float,
                 replace_random: float, seed: int):
        self.windows, self.seed = windows, seed
        self.kw = dict(mask_id=mask_id, vocab_size=vocab_size, prob=prob, replace_mask=replace_mask,
                       replace_random=replace_random)

    def batches_per_epoch(self) -> int:
        return self.windows.batches_per_epoch()

    def __iter__(self) -> "MaskedWindows":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        key = (self.seed * 1_000_003 + self.windows.epoch) * 1_000_003 + self.windows.index
        key = key * 1_000_003 + self.windows.rank if self.windows.rank else key  # ranks mask independently
        g = torch.Generator().manual_seed(key % 2**63)
        batch = next(self.windows)  # the windows' shifted target is not used: MLM predicts in place
        inputs, targets = mask_tokens(batch["input"], generator=g, **self.kw)
        return {"input": inputs, "target": targets}

    def state_dict(self) -> dict[str, Any]:
        return self.windows.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.windows.load_state_dict(state)


def mask_fixed(batches: list[dict[str, torch.Tensor]], *, seed: int, **kw: Any) -> list[dict[str, torch.Tensor]]:
    """Mask evaluation windows once, with a fixed seed, so every evaluation scores the same positions."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for b in batches:
        inputs, targets = mask_tokens(b["input"], generator=g, **kw)
        out.append({"input": inputs, "target": targets})
    return out
