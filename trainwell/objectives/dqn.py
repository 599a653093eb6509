"""DQN's objective: regress Q(s, a) of the taken action onto the TD target the replay source
computed with the target network (Mnih et al. 2015, eq. 2; Huber loss as in their Methods)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from trainwell.objectives.base import LossOutput


def dqn_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, loss: str = "huber") -> LossOutput:
    q = model(batch["obs"])  # (B, actions)
    q_taken = q.gather(-1, batch["actions"][:, None]).squeeze(-1).float()
    target = batch["target"].float()
    td = F.smooth_l1_loss(q_taken, target) if loss == "huber" else F.mse_loss(q_taken, target)
    return LossOutput(loss=td, units=len(target), metrics={"q_mean": q_taken.detach().mean(),
                                                          "td_abs": (q_taken - target).detach().abs().mean()})
