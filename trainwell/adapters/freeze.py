"""Freezing by parameter-name patterns: train only the head, the last k blocks, ..."""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch.nn as nn

from trainwell.errors import ConfigError


def freeze(model: nn.Module, *, freeze: list[str], train_only: list[str]) -> list[str]:
    """Set ``requires_grad`` from glob patterns over ``named_parameters`` names; returns the names
    left trainable. ``train_only`` (if given) freezes everything else; ``freeze`` then freezes
    matches. A tied weight appears once, under its first name (GPT: ``tok_emb.weight``, which is
    also the output layer)."""
    names = [n for n, _ in model.named_parameters()]
    for label, patterns in (("adapter.freeze", freeze), ("adapter.train_only", train_only)):
        for pat in patterns:
            if not any(fnmatchcase(n, pat) for n in names):
                shown = ", ".join(names[:6]) + (", ..." if len(names) > 6 else "")
                raise ConfigError(f"{label} pattern {pat!r} matches no parameter of this model; its "
                                  f"parameters are named like: {shown}.")
    trainable = []
    for name, p in model.named_parameters():
        keep = not train_only or any(fnmatchcase(name, pat) for pat in train_only)
        keep = keep and not any(fnmatchcase(name, pat) for pat in freeze)
        p.requires_grad_(keep)
        if keep:
            trainable.append(name)
    if not trainable:
        raise ConfigError("adapter.freeze / adapter.train_only leave no parameter to train; loosen the patterns.")
    return trainable
