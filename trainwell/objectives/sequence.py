"""Per-token log-probabilities of sequences, shared by the preference objectives.

A batch holds ``ids`` (B, T): prompt + completion, right-padded, and ``mask`` (B, T): True on
completion tokens. The model reads ``ids[:, :-1]``; position t predicts token t + 1, so the
targets are ``ids[:, 1:]`` and the tokens that count are ``mask[:, 1:]``.
"""

from __future__ import annotations

import torch


def shifted(ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(inputs (B, T-1), targets (B, T-1), float mask of the targets that are completion tokens)."""
    return ids[:, :-1], ids[:, 1:], mask[:, 1:].float()


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """(B, T, V) logits, (B, T) targets -> (B, T) log p(target) in fp32, without materialising the
    whole (B, T, V) log-softmax (a gather minus the log-normaliser)."""
    logits = logits.float()
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def token_entropy(logits: torch.Tensor) -> torch.Tensor:
    """(B, T, V) -> (B, T) entropy of each position's next-token distribution (nats)."""
    logits = logits.float()
    return torch.logsumexp(logits, -1) - (torch.softmax(logits, -1) * logits).sum(-1)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1)


def sequence_logps(model: torch.nn.Module, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(B,) summed log-probability of each row's completion tokens under ``model``."""
    inputs, targets, m = shifted(ids, mask)
    return (token_logps(model(inputs), targets) * m).sum(-1)
