"""Generalized advantage estimation (Schulman et al. 2016, eq. 11-16)."""

from __future__ import annotations

import torch


def gae(rewards: torch.Tensor, values: torch.Tensor, next_values: torch.Tensor, terminated: torch.Tensor,
        ended: torch.Tensor, gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """All inputs (T, N). ``next_values[t]`` is V(s_{t+1}) of the observation that followed step t
    (for a truncated episode: its final observation, so time limits bootstrap); ``terminated``
    zeroes that bootstrap (a true end has no future), ``ended`` (terminated or truncated) stops
    the advantage from flowing across an episode boundary. Returns (advantages, returns)."""
    T = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[0])
    for t in reversed(range(T)):
        delta = rewards[t] + gamma * next_values[t] * (1 - terminated[t]) - values[t]
        running = delta + gamma * lam * (1 - ended[t]) * running
        adv[t] = running
    return adv, adv + values
