"""Losses as pure functions: (model, batch) -> LossOutput."""

from __future__ import annotations

from typing import Any, Callable

import torch

from trainwell.config.imports import is_import_path, load_callable, options
from trainwell.errors import ConfigError
from trainwell.objectives.base import LossOutput
from trainwell.objectives.lm import lm_loss
from trainwell.objectives.mlm import mlm_loss
from trainwell.objectives.supervised import classify_loss, regress_loss

Objective = Callable[[torch.nn.Module, dict[str, torch.Tensor]], LossOutput]

OBJECTIVES: dict[str, Objective] = {"lm": lm_loss, "mlm": mlm_loss, "classify": classify_loss,
                                    "regress": regress_loss}


def as_loss_output(value: Any, batch: dict[str, torch.Tensor], where: str) -> LossOutput:
    """A user's loss: a LossOutput as is, or a scalar tensor averaged over the batch's samples."""
    if isinstance(value, LossOutput):
        return value
    if isinstance(value, torch.Tensor) and value.dim() == 0:
        first = next(iter(batch.values()), None)
        return LossOutput(loss=value, units=int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim()
                          else 1)
    raise ConfigError(f"{where} returned {type(value).__name__}"
                      f"{' of shape ' + str(tuple(value.shape)) if isinstance(value, torch.Tensor) else ''}; "
                      f"an objective returns a scalar loss tensor or a trainwell LossOutput.")


def wrap_objective(fn: Callable[..., Any], where: str, **kwargs: Any) -> Objective:
    """``fn(model, batch, **kwargs)`` as an objective that always returns a LossOutput."""
    def objective(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> LossOutput:
        return as_loss_output(fn(model, batch, **kwargs), batch, where)

    return objective


def resolve(section: Any) -> Objective:
    """The objective an ``[objective]`` section names: a shipped one, or ``module:function`` (its extra
    keys are passed to the function as keyword arguments)."""
    if is_import_path(section.name):
        fn = load_callable(section.name, "objective.name")
        return wrap_objective(fn, f"objective.name = {section.name!r}", **options(section))
    if section.name not in OBJECTIVES:
        raise ConfigError(f"objective.name = {section.name!r} is not an objective for this data; choose one of "
                          f"{', '.join(OBJECTIVES)} or a 'module:function' of your own.")
    return OBJECTIVES[section.name]


__all__ = ["LossOutput", "OBJECTIVES", "as_loss_output", "classify_loss", "lm_loss", "mlm_loss", "regress_loss",
           "resolve", "wrap_objective"]
