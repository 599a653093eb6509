"""Losses as pure functions: (model, batch) -> LossOutput."""

from trainwell.objectives.base import LossOutput
from trainwell.objectives.lm import lm_loss
from trainwell.objectives.mlm import mlm_loss
from trainwell.objectives.supervised import classify_loss, regress_loss

OBJECTIVES = {"lm": lm_loss, "mlm": mlm_loss, "classify": classify_loss, "regress": regress_loss}

__all__ = ["LossOutput", "OBJECTIVES", "classify_loss", "lm_loss", "mlm_loss", "regress_loss"]
