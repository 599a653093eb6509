"""Apply activation checkpointing and compilation from outside a plain model."""

from __future__ import annotations

import torch
from torch.utils.checkpoint import checkpoint

from trainwell.errors import ConfigError


def apply_activation_checkpointing(model: torch.nn.Module, every: int) -> int:
    """Recompute blocks 0, k, 2k, ... in backward instead of storing their activations.

    Overrides each chosen block's ``forward`` on the instance, so parameter names (and so
    checkpoints) stay exactly those of the plain model. Returns how many blocks were wrapped.
    """
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ConfigError("train.activation_checkpointing needs a model made of blocks (model.blocks); "
                          "set train.activation_checkpointing = 0 for this model.")
    wrapped = 0
    for i, block in enumerate(blocks):
        if i % every == 0:
            inner = block.forward
            # non-reentrant checkpointing: works with autocast and keeps the RNG state for dropout
            block.forward = lambda *a, _f=inner, **kw: checkpoint(_f, *a, use_reentrant=False, **kw)
            wrapped += 1
    return wrapped


def maybe_compile(model: torch.nn.Module, enabled: bool) -> torch.nn.Module:
    """The module to run the training step with (parameters are shared with ``model``)."""
    return torch.compile(model) if enabled else model
