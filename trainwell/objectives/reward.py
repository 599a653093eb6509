"""Reward modelling from preference pairs (Bradley-Terry; Christiano et al. 2017, Ouyang et al. 2022 eq. 1):
loss = -log sigmoid(r(x, y_chosen) - r(x, y_rejected)), optionally plus a centring term that keeps
rewards near zero (Eisenstein et al. 2023; TRL's ``center_rewards_coefficient``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainwell.objectives.base import LossOutput
from trainwell.objectives.packing import packed, sides


def bradley_terry(chosen: torch.Tensor, rejected: torch.Tensor, center_coef: float = 0.0
                  ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(B,) rewards of the chosen and rejected completions -> (mean loss, metrics)."""
    loss = -F.logsigmoid(chosen - rejected).mean()
    if center_coef:
        loss = loss + center_coef * ((chosen + rejected) ** 2).mean()
    with torch.no_grad():
        metrics = {"accuracy": (chosen > rejected).float().mean(), "margin": (chosen - rejected).mean(),
                   "rewards/chosen": chosen.mean(), "rewards/rejected": rejected.mean()}
    return loss, metrics


def last_token_scores(model: torch.nn.Module, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """(N,) reward of each row: the model's score at its last real token."""
    scores = model(ids)  # (N, T)
    return scores[torch.arange(len(ids), device=ids.device), lengths - 1].float()


def reward_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, center_coef: float = 0.0) -> LossOutput:
    """``batch``: ids (2B, T) - the B chosen rows, then the B rejected rows - and lengths (2B,)."""
    pk = packed(model, batch)
    if pk is not None:  # both sides of a pair in one row: the prompt once (trainwell/objectives/packing.py)
        scores = model(pk.ids, packed=pk.layout)  # (B, L)
        r = scores[sides(scores), pk.last].float()
    else:
        r = last_token_scores(model, batch["ids"], batch["lengths"])
    chosen, rejected = r.chunk(2)
    loss, metrics = bradley_terry(chosen, rejected, center_coef)
    return LossOutput(loss=loss, units=len(chosen), metrics=metrics, processed=int(batch["ids"].numel()))
