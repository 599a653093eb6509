"""PPO's clipped surrogate objective (Schulman et al. 2017, eq. 7 and 9), with a clipped value
loss and an entropy bonus, as in the cleanrl/SB3 implementations of the paper."""

from __future__ import annotations

import torch

from trainwell.models.actor_critic import log_prob
from trainwell.objectives.base import LossOutput


def ppo_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, clip: float, vf_coef: float,
             ent_coef: float, clip_value: bool, norm_adv: bool) -> LossOutput:
    dist, value = model(batch["obs"], batch.get("mask"))  # mask: action-masked envs only
    logp = log_prob(dist, batch["actions"], model.continuous)
    log_ratio = logp - batch["logp"]
    ratio = log_ratio.exp()
    adv = batch["adv"]
    if norm_adv:  # per-minibatch normalisation
        adv = (adv - adv.mean()) / (adv.std() + 1e-8)
    policy_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip)).mean()
    returns, old_v = batch["returns"], batch["values"]
    v_err = (value - returns) ** 2
    if clip_value:
        v_clipped = old_v + (value - old_v).clamp(-clip, clip)
        v_err = torch.max(v_err, (v_clipped - returns) ** 2)
    value_loss = 0.5 * v_err.mean()
    entropy = dist.entropy()
    entropy = (entropy.sum(-1) if model.continuous else entropy).mean()
    loss = policy_loss + vf_coef * value_loss - ent_coef * entropy
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean()  # Schulman's low-variance KL estimator
        clip_frac = ((ratio - 1).abs() > clip).float().mean()
    return LossOutput(loss=loss, units=len(adv), metrics={
        "policy_loss": policy_loss.detach(), "value_loss": value_loss.detach(), "entropy": entropy.detach(),
        "approx_kl": approx_kl, "clip_frac": clip_frac})
