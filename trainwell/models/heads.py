"""Scalar heads on a causal language model: a reward model and a policy with a value head.

Both wrap a *body*: any causal LM with ``features(ids) -> (B, T, width)`` (its final hidden states),
``lm_head`` (hidden states -> logits) and ``width`` - trainwell's GPT or a Hugging Face causal LM
(trainwell/models/hf.py). The body keeps its own parameter names under ``body.``, so a pretrained
LM checkpoint loads into it (trainwell/engine/prepare.py matches names across that one prefix).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn


class ScalarHead(nn.Module):
    """A reward model: one number per position, read at a sequence's last token.

    ``forward(ids)``: (B, T) -> (B, T) scores; r(x, y) is the score at the last real token of
    prompt + completion (the objective picks it, trainwell/objectives/reward.py).
    """

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.head = nn.Linear(body.width, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (body.width + 1) ** 0.5)  # as TRL's reward head
        nn.init.zeros_(self.head.bias)
        self.context = getattr(body, "context", 1 << 30)

    @property
    def accepts_packed(self) -> bool:  # both sides of a pair in one row (trainwell/objectives/packing.py)
        return bool(getattr(self.body, "accepts_packed", False))

    def forward(self, ids: torch.Tensor, packed: Any = None) -> torch.Tensor:
        features = self.body.features(ids) if packed is None else self.body.features(ids, packed=packed)
        return self.head(features).squeeze(-1)


class PolicyValue(nn.Module):
    """A policy with a value head on the same trunk (PPO for language models).

    ``forward(ids)``: (B, T) -> ((B, T, vocab) logits, (B, T) values); the value at position t
    estimates the return after the token at t. ``policy`` is the plain LM that generation uses.
    """

    def __init__(self, body: nn.Module):
        super().__init__()
        self.body = body
        self.value = nn.Linear(body.width, 1)
        nn.init.zeros_(self.value.weight)  # values start at 0: the first advantages are the rewards
        nn.init.zeros_(self.value.bias)
        self.context = getattr(body, "context", 1 << 30)

    @property
    def policy(self) -> nn.Module:
        return self.body

    def forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body.features(ids)  # (B, T, width)
        return self.body.lm_head(h), self.value(h).squeeze(-1)
