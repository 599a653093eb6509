"""Apply activation checkpointing and compilation from outside a plain model."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch
from torch.utils.checkpoint import checkpoint

from trainwell.errors import ConfigError

if TYPE_CHECKING:
    from trainwell.config.schema import TrainConfig


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
            # non-reentrant checkpointing: works with autocast and keeps the RNG state for dropout;
            # the recompute (in backward, outside the step's contexts) must also pick the attention
            # kernels the forward picked, or it saves tensors of other shapes (bf16 on CPU runs the
            # math kernel, see engine/precision.py) and torch refuses the backward
            block.forward = lambda *a, _f=inner, **kw: checkpoint(_f, *a, use_reentrant=False,
                                                                  context_fn=same_attention_kernels, **kw)
            wrapped += 1
    return wrapped


def same_attention_kernels() -> tuple[contextlib.AbstractContextManager[None], contextlib.AbstractContextManager[None]]:
    """(forward, recompute) contexts for ``checkpoint``: the recompute uses the attention backends
    that are enabled now, in the forward."""
    from torch.nn.attention import _cur_sdpa_kernel_backends, sdpa_kernel

    return contextlib.nullcontext(), sdpa_kernel(_cur_sdpa_kernel_backends())


def remove_activation_checkpointing(model: torch.nn.Module) -> None:
    """Undo :func:`apply_activation_checkpointing` (the plan measures a step both ways)."""
    for block in getattr(model, "blocks", []):
        block.__dict__.pop("forward", None)


def maybe_compile(model: torch.nn.Module, train: TrainConfig) -> torch.nn.Module:
    """The module to run the training step with (parameters are shared with ``model``): compiled with
    ``train.compile_backend`` when ``train.compile`` is on."""
    return torch.compile(model, backend=train.compile_backend) if train.compile else model
