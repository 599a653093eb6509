"""Shared test helpers: a tiny model with the awkward parts real models have.

A plain module (not conftest.py) so tests can import it; the name is unique across tests/
because test dirs have no __init__.py and pytest imports them by basename.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class TinyLM(nn.Module):
    """Tied embedding/head, a bf16 buffer and a non-contiguous buffer; ~100 parameters."""

    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(11, 4)
        self.blocks = nn.ModuleList([nn.Linear(4, 4), nn.Linear(4, 4)])
        self.lm_head = nn.Linear(4, 11, bias=False)
        self.lm_head.weight = self.tok_emb.weight  # tied: one Parameter, two state_dict keys
        self.register_buffer("scale", torch.randn(3).to(torch.bfloat16))
        self.register_buffer("t_buf", torch.randn(3, 2).t())  # (2, 3) view, non-contiguous

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.tok_emb(idx)
        for blk in self.blocks:
            x = torch.relu(blk(x))
        return self.lm_head(x)


def train_steps(model: nn.Module, opt: torch.optim.Optimizer, n: int) -> None:
    g = torch.Generator().manual_seed(123)
    for _ in range(n):
        idx = torch.randint(0, 11, (2, 5), generator=g)
        loss = model(idx).logsumexp(-1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def make_run(seed: int) -> tuple[TinyLM, torch.optim.AdamW]:
    torch.manual_seed(seed)
    model = TinyLM()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.95), weight_decay=0.1)
    return model, opt


def assert_same(a: Any, b: Any, path: str = "") -> None:
    """Exact structural equality: types (tuple vs list, int vs float), dtypes, bits."""
    assert type(a) is type(b) or (isinstance(a, dict) and isinstance(b, dict)), (path, type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and a.shape == b.shape, path
        assert torch.equal(a.cpu(), b.cpu()), path
    elif isinstance(a, dict):
        assert list(a) == list(b), path
        for k in a:
            assert_same(a[k], b[k], f"{path}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}/{i}")
    elif isinstance(a, float) and a != a:
        assert b != b, path
    else:
        assert a == b, path


class Box:
    """A Stateful around an arbitrary state_dict, for format edge cases."""

    def __init__(self, state: Any = None) -> None:
        self.state = state

    def state_dict(self) -> Any:
        return self.state

    def load_state_dict(self, state: Any) -> None:
        self.state = state
