"""Losses as pure functions: (model, batch) -> LossOutput."""

from trainwell.objectives.base import LossOutput
from trainwell.objectives.lm import lm_loss

OBJECTIVES = {"lm": lm_loss}

__all__ = ["LossOutput", "OBJECTIVES", "lm_loss"]
