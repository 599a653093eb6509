"""Actor-critic MLPs for PPO: a policy head (categorical or diagonal Gaussian) and a value head."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.distributions import Categorical, Distribution, Normal

from trainwell.config.schema import ActorCriticConfig


def mlp(sizes: list[int], out: int, out_std: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(a, b), nn.Tanh()]
    layers.append(nn.Linear(sizes[-1], out))
    # orthogonal init with small output gains (Andrychowicz et al. 2021, "What matters in on-policy RL")
    for m in layers:
        if isinstance(m, nn.Linear):
            nn.init.orthogonal_(m.weight, math.sqrt(2))
            nn.init.zeros_(m.bias)
    nn.init.orthogonal_(layers[-1].weight, out_std)
    return nn.Sequential(*layers)


class ActorCritic(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], continuous: bool):
        super().__init__()
        self.continuous = continuous
        self.actor = mlp([obs_dim, *hidden], act_dim, 0.01)
        self.critic = mlp([obs_dim, *hidden], 1, 1.0)
        self.log_std = nn.Parameter(torch.zeros(act_dim)) if continuous else None

    def forward(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[Distribution, torch.Tensor]:
        """(B, obs_dim) -> (action distribution, value (B,)). ``mask`` (B, act_dim) bool marks the
        legal discrete actions (environments that report ``info["action_mask"]``)."""
        head = self.actor(obs)
        if mask is not None:
            head = masked_logits(head, mask)
        dist = Normal(head, self.log_std.exp()) if self.continuous else Categorical(logits=head)
        return dist, self.critic(obs).squeeze(-1)

    def act(self, obs: torch.Tensor, deterministic: bool = False, mask: torch.Tensor | None = None) -> torch.Tensor:
        dist, _ = self(obs, mask)
        if deterministic:
            return dist.mean if self.continuous else dist.probs.argmax(dim=-1)
        return dist.sample()


def masked_logits(logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Illegal actions get the most negative finite logit (probability 0, and no NaN in the
    entropy as -inf would give); a row with no legal action (a terminal state) stays unmasked."""
    keep = mask.bool() | ~mask.bool().any(-1, keepdim=True)
    return logits.masked_fill(~keep, torch.finfo(logits.dtype).min)


def log_prob(dist: Distribution, actions: torch.Tensor, continuous: bool) -> torch.Tensor:
    lp = dist.log_prob(actions)
    return lp.sum(-1) if continuous else lp


def build_actor_critic(cfg: ActorCriticConfig, *, obs_dim: int, act_dim: int, continuous: bool,
                       **_: object) -> ActorCritic:
    return ActorCritic(obs_dim, act_dim, cfg.hidden, continuous)
