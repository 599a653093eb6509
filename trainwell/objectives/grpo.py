"""Group relative policy optimisation (Shao et al. 2024, DeepSeekMath eq. 3): G completions per prompt,
each completion's advantage is its reward relative to its group's, no critic; PPO's clipped ratio per
token, optionally a KL(pi || pi_ref) term (the k3 estimator per token, as the paper and TRL).

    A_i = (r_i - mean(r_group)) / (std(r_group) + 1e-4)         (scale "group"; "none": Dr. GRPO)
    loss = mean over completion tokens of -min(rho A, clip(rho, 1 - e_low, 1 + e_high) A) + beta k3
"""

from __future__ import annotations

import torch

from trainwell.objectives.base import LossOutput
from trainwell.objectives.sequence import masked_mean, shifted, token_entropy, token_logps


def group_advantages(rewards: torch.Tensor, group_size: int, scale: str = "group") -> torch.Tensor:
    """(N,) rewards, N = prompts x group_size with each prompt's completions adjacent -> (N,) advantages."""
    groups = rewards.float().view(-1, group_size)
    adv = groups - groups.mean(1, keepdim=True)
    if scale == "group":
        adv = adv / (groups.std(1, keepdim=True) + 1e-4)
    elif scale == "batch":
        adv = adv / (rewards.float().std() + 1e-4)
    return adv.reshape(-1)


def k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimate (r - 1) - log r with r = pi_ref / pi: unbiased, never negative."""
    d = ref_logp - logp
    return torch.exp(d) - d - 1


def clipped_surrogate(logp: torch.Tensor, old_logp: torch.Tensor, adv: torch.Tensor, low: float, high: float
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token -min(rho A, clip(rho) A) and the ratio rho; adv broadcasts against (B, T)."""
    ratio = torch.exp(logp - old_logp)
    return -torch.min(ratio * adv, ratio.clamp(1 - low, 1 + high) * adv), ratio


def grpo_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], *, clip: float = 0.2, clip_high: float = 0.0,
              beta: float = 0.0, loss_type: str = "token", temperature: float = 1.0) -> LossOutput:
    """``batch``: ids/mask (B, T), adv (B,), and old_logp (B, T-1) when the rollout is reused (several
    epochs or minibatches; otherwise the policy is the one that sampled: old = current, detached),
    ref_logp (B, T-1) when beta > 0."""
    inputs, targets, m = shifted(batch["ids"], batch["mask"])
    logits = model(inputs)
    if temperature > 0 and temperature != 1:
        logits = logits / temperature  # the distribution the completions were sampled from
    logp = token_logps(logits, targets)  # (B, T-1)
    old = batch["old_logp"] if "old_logp" in batch else logp.detach()
    adv = batch["adv"].float()[:, None]
    high = clip_high or clip
    per_token, ratio = clipped_surrogate(logp, old, adv, clip, high)
    kl = k3(logp, batch["ref_logp"]) if beta > 0 else None
    if kl is not None:
        per_token = per_token + beta * kl
    if loss_type == "sequence":
        loss = ((per_token * m).sum(-1) / m.sum(-1).clamp_min(1)).mean()
    else:
        loss = masked_mean(per_token, m)
    with torch.no_grad():
        low_clipped = ((ratio < 1 - clip) & (adv < 0)).float()
        high_clipped = ((ratio > 1 + high) & (adv > 0)).float()
        metrics = {"clip_ratio/low_mean": masked_mean(low_clipped, m),
                   "clip_ratio/high_mean": masked_mean(high_clipped, m),
                   "clip_ratio/region_mean": masked_mean(torch.maximum(low_clipped, high_clipped), m),
                   "entropy": masked_mean(token_entropy(logits), m)}
        if kl is not None:
            metrics["kl"] = masked_mean(kl, m)
    return LossOutput(loss=loss, units=int(m.sum()), metrics=metrics, processed=int(batch["ids"].numel()))
