"""Actor-critic MLPs for PPO: a policy head (categorical or diagonal Gaussian) and a value head."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
from torch.distributions import Categorical, Distribution, Normal

from trainwell.config.schema import ActorCriticConfig
from trainwell.models.normalize import RunningNorm


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
    def __init__(self, obs_dim: int, act_dim: int, hidden: list[int], continuous: bool, normalize_obs: bool = False):
        super().__init__()
        self.continuous = continuous
        # running observation statistics, updated by the rollout collector (not by forward)
        self.obs_norm = RunningNorm((obs_dim,)) if normalize_obs else None
        self.actor = mlp([obs_dim, *hidden], act_dim, 0.01)
        self.critic = mlp([obs_dim, *hidden], 1, 1.0)
        self.log_std = nn.Parameter(torch.zeros(act_dim)) if continuous else None

    def forward(self, obs: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[Distribution, torch.Tensor]:
        """(B, obs_dim) -> (action distribution, value (B,)). ``mask`` (B, act_dim) bool marks the
        legal discrete actions (environments that report ``info["action_mask"]``)."""
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        head = self.actor(obs)
        if mask is not None:
            head = masked_logits(head, mask)
        return self.distribution(head), self.critic(obs).squeeze(-1)

    def distribution(self, head: torch.Tensor) -> Distribution:
        # argument validation costs more than these tiny networks' forward pass; the inputs are ours
        if self.continuous:
            return Normal(head, self.log_std.exp(), validate_args=False)
        return Categorical(logits=head, validate_args=False)

    def act(self, obs: torch.Tensor, deterministic: bool = False, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.obs_norm is not None:
            obs = self.obs_norm(obs)
        head = self.actor(obs)  # the critic is not needed to act
        if mask is not None:
            head = masked_logits(head, mask)
        if deterministic:
            return head if self.continuous else head.argmax(dim=-1)
        return self.distribution(head).sample()


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
    return ActorCritic(obs_dim, act_dim, cfg.hidden, continuous, cfg.normalize_obs)
