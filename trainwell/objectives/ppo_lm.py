"""PPO for language models (Ziegler et al. 2019; Ouyang et al. 2022 eq. 2; Huang et al. 2024, "The N+
implementation details of RLHF with PPO"): every completion token is an action; its reward is minus
beta times the per-token KL to the reference, plus the reward model's score on the last token; a
value head on the policy's trunk gives V per token; GAE runs backwards over the completion tokens.

    r_t = -beta kl_t  (+ score at the last token),  kl_t = k1: log pi - log pi_ref  or  k3
    delta_t = r_t + gamma V_{t+1} - V_t,  A_t = delta_t + gamma lambda A_{t+1}  (V, A = 0 after the end)
    loss = clipped surrogate (as PPO) + vf_coef * 0.5 max((V - R)^2, (V_clipped - R)^2)
"""

from __future__ import annotations

import torch

from trainwell.objectives.base import LossOutput
from trainwell.objectives.grpo import clipped_surrogate, k3
from trainwell.objectives.sequence import masked_mean, shifted, token_entropy, token_logps


def kl_per_token(logp: torch.Tensor, ref_logp: torch.Tensor, estimator: str = "k1") -> torch.Tensor:
    """(B, T) estimate of KL(pi || pi_ref) at each sampled token: k1 (unbiased, may be negative) or k3."""
    return logp - ref_logp if estimator == "k1" else k3(logp, ref_logp)


def token_rewards(kl: torch.Tensor, mask: torch.Tensor, score: torch.Tensor, kl_coef: float) -> torch.Tensor:
    """(B, T) per-token rewards: -kl_coef * kl on completion tokens, plus ``score`` (B,) on each row's last
    completion token."""
    rewards = -kl_coef * kl * mask
    last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(-1)  # (B,) last completion position
    rewards[torch.arange(len(score), device=mask.device), last] += score.float()
    return rewards


def token_gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T) rewards, values, completion mask -> (advantages, returns), both 0 outside the completion."""
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    next_value = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(rewards.shape[1])):
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * m  # resets outside the completion: no leak across rows' ends
        adv[:, t] = running
        next_value = values[:, t] * m
    return adv, (adv + values) * mask


def whiten(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit variance over the masked entries (advantage normalisation); 0 elsewhere."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


def ppo_lm_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, clip: float = 0.2, vf_coef: float = 0.1,
                clip_value: float = 0.2, temperature: float = 1.0) -> LossOutput:
    """``model(ids) -> (logits, values)``; ``batch``: ids/mask (B, T); old_logp, values (old), adv, returns
    (B, T-1) from the rollout."""
    inputs, targets, m = shifted(batch["ids"], batch["mask"])
    logits, values = model(inputs)
    if temperature > 0 and temperature != 1:
        logits = logits / temperature
    logp = token_logps(logits, targets)
    per_token, ratio = clipped_surrogate(logp, batch["old_logp"], batch["adv"], clip, clip)
    policy_loss = masked_mean(per_token, m)
    values = values.float()
    returns, old_values = batch["returns"], batch["values"]
    v_err = (values - returns) ** 2
    if clip_value > 0:
        v_err = torch.max(v_err, (old_values + (values - old_values).clamp(-clip_value, clip_value) - returns) ** 2)
    value_loss = 0.5 * masked_mean(v_err, m)
    loss = policy_loss + vf_coef * value_loss
    with torch.no_grad():
        log_ratio = logp - batch["old_logp"]
        metrics = {"policy_loss": policy_loss, "value_loss": value_loss,
                   "clip_ratio/region_mean": masked_mean(((ratio - 1).abs() > clip).float(), m),
                   "approx_kl": masked_mean((ratio - 1) - log_ratio, m),
                   "entropy": masked_mean(token_entropy(logits), m)}
    return LossOutput(loss=loss, units=int(m.sum()), metrics=metrics, processed=int(batch["ids"].numel()))
