"""Negative log-likelihood of dequantized data, in bits per dimension."""

from __future__ import annotations

import math

import torch

from trainwell.objectives.base import LossOutput


def bits_per_dim(nll_nats: torch.Tensor | float, dims: int) -> torch.Tensor | float:
    """NLL of a D-dimensional sample in nats -> bits per dimension: nll / (D ln 2)."""
    return nll_nats / (dims * math.log(2))


def density_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
    """The loss is the mean NLL in bits/dim of the dequantized inputs (B, *shape) in their original
    pixel scale; with uniform dequantization it upper-bounds the discrete data's bits/dim."""
    x = batch["input"]
    nll = -model.log_prob(x.float())  # (B,) nats, exact for a flow
    loss = bits_per_dim(nll, x[0].numel()).mean()
    return LossOutput(loss=loss, units=len(x), metrics={"bits_per_dim": loss.detach()})
