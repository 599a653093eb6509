"""PPO's data source: collect a rollout with the current policy, then yield shuffled minibatches
for several epochs. To the loop it is just another stateful iterator of batches.

Exact resume: the state holds the rollout buffer, the position within its epochs, the episode
bookkeeping, the reward-scaling statistics, the current legal-action mask (environments that
report ``info["action_mask"]``) and every sub-environment's state (see :mod:`trainwell.rl.envs`).
Observation statistics live in the model (its ``obs_norm`` buffers).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainwell.models.actor_critic import log_prob
from trainwell.models.normalize import RunningNorm
from trainwell.rl.envs import Episodes, action_mask, env_states, make_envs, restore_env_states
from trainwell.rl.gae import gae


class PPORollouts:
    def __init__(self, model: torch.nn.Module, *, env_id: str, num_envs: int, rollout_steps: int,
                 gamma: float, lam: float, update_epochs: int, minibatch_size: int, seed: int,
                 normalize_reward: bool = False, env_kwargs: dict[str, Any] | None = None):
        self.model, self.seed = model, seed
        self.envs = make_envs(env_id, num_envs, **(env_kwargs or {}))
        self.continuous = model.continuous
        self.n, self.T, self.gamma, self.lam = num_envs, rollout_steps, gamma, lam
        self.update_epochs, self.mb = update_epochs, minibatch_size
        self.per_epoch = max(1, (num_envs * rollout_steps) // minibatch_size)
        obs, info = self.envs.reset(seed=seed)
        self.obs = torch.as_tensor(obs, dtype=torch.float32)
        self.mask = action_mask(info)  # (N, A) bool for envs that mask actions, else None
        self.rollouts = 0  # rollouts collected so far
        self.cursor = self.update_epochs * self.per_epoch  # minibatches served from the buffer
        self.buffer: dict[str, torch.Tensor] = {}
        # reward scaling (as SB3's VecNormalize): divide by the std of the running discounted return
        self.reward_norm = RunningNorm(()) if normalize_reward else None
        self.disc_return = torch.zeros(num_envs, dtype=torch.float64)
        self.episodes = Episodes(num_envs)
        self.explained_variance = float("nan")

    def updates_per_rollout(self) -> int:
        return self.update_epochs * self.per_epoch

    def env_steps(self) -> int:
        return self.rollouts * self.n * self.T

    # ------------------------------------------------------------------ iteration
    def __iter__(self) -> "PPORollouts":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.cursor >= self.updates_per_rollout():
            self.collect()
        epoch, k = divmod(self.cursor, self.per_epoch)
        g = torch.Generator().manual_seed((self.seed * 1_000_003 + self.rollouts) * 1_000_003 + epoch)
        order = torch.randperm(self.n * self.T, generator=g)[k * self.mb:(k + 1) * self.mb]
        self.cursor += 1
        return {key: value[order] for key, value in self.buffer.items()}

    @torch.no_grad()
    def collect(self) -> None:
        model = self.model
        was = model.training
        model.eval()
        device = next(model.parameters()).device
        obs_norm = getattr(model, "obs_norm", None)
        if obs_norm is not None and self.buffer:
            # fold in the previous rollout's observations now, so the statistics stay fixed while
            # this rollout is collected and trained on (old and new log-probs see the same inputs)
            obs_norm.update(self.buffer["obs"].to(device))
        keys = ("obs", "actions", "logp", "values", "rewards", "final_values", "terminated", "ended")
        store: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for _ in range(self.T):
            obs = self.obs.to(device)
            mask = None if self.mask is None else self.mask.to(device)
            dist, value = model(obs, mask)
            action = dist.sample()
            nxt, reward, term, trunc, info = self.envs.step(action.cpu().numpy())
            ended = np.logical_or(term, trunc)
            # SAME_STEP autoreset: where an episode ended, `nxt` is already the next episode's first
            # observation and the true last one is in info["final_obs"]. Only a truncated episode
            # (time limit, not a real end) needs that observation's value to bootstrap from.
            final_value = torch.zeros(self.n)
            cut = np.flatnonzero(np.logical_and(trunc, np.logical_not(term)))
            if len(cut):
                final_obs = torch.as_tensor(np.stack([info["final_obs"][i] for i in cut]), dtype=torch.float32)
                final_value[cut] = model(final_obs.to(device))[1].float().cpu()
            r = torch.as_tensor(reward, dtype=torch.float32)
            if self.reward_norm is not None:
                self.disc_return = self.disc_return * self.gamma + r.double()
                self.reward_norm.update(self.disc_return)
                self.disc_return[torch.as_tensor(ended)] = 0.0
                r = self.reward_norm.scale(r)
            for k, v in zip(keys, (obs.cpu(), action.cpu(), log_prob(dist, action, self.continuous).cpu(),
                                   value.float().cpu(), r, final_value, torch.as_tensor(term, dtype=torch.float32),
                                   torch.as_tensor(ended, dtype=torch.float32))):
                store[k].append(v)
            if mask is not None:
                store.setdefault("mask", []).append(mask.cpu())
            self.mask = action_mask(info)
            self.episodes.step(reward, ended)
            self.obs = torch.as_tensor(nxt, dtype=torch.float32)
        s = {k: torch.stack(v) for k, v in store.items()}  # (T, N, ...)
        # V(s_{t+1}): the next step's value, or the final observation's where the episode ended
        last_value = model(self.obs.to(device))[1].float().cpu()
        following = torch.cat([s["values"][1:], last_value[None]])
        next_values = torch.where(s["ended"].bool(), s["final_values"], following)
        adv, ret = gae(s["rewards"], s["values"], next_values, s["terminated"], s["ended"], self.gamma, self.lam)
        self.explained_variance = float(1 - (ret - s["values"]).var() / ret.var().clamp_min(1e-12))
        flat = lambda t: t.reshape(self.T * self.n, *t.shape[2:])  # noqa: E731
        self.buffer = {"obs": flat(s["obs"]), "actions": flat(s["actions"]), "logp": flat(s["logp"]),
                       "values": flat(s["values"]), "adv": flat(adv), "returns": flat(ret)}
        if "mask" in s:
            self.buffer["mask"] = flat(s["mask"])
        self.rollouts += 1
        self.cursor = 0
        model.train(was)

    def episode_stats(self) -> dict[str, float]:
        return {**self.episodes.stats(self.env_steps()), "rl/explained_variance": self.explained_variance}

    # ------------------------------------------------------------------ Stateful
    def state_dict(self) -> dict[str, Any]:
        state = {"rollouts": self.rollouts, "cursor": self.cursor, "obs": self.obs.clone(),
                 "buffer": {k: v.clone() for k, v in self.buffer.items()},
                 "episodes": self.episodes.state_dict(), "envs": env_states(self.envs), "disc_return": self.disc_return.clone(),
                 "mask": None if self.mask is None else self.mask.clone()}
        if self.reward_norm is not None:
            state["reward_norm"] = {k: v.clone() for k, v in self.reward_norm.state_dict().items()}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollouts, self.cursor = int(state["rollouts"]), int(state["cursor"])
        self.obs = state["obs"].clone()
        self.buffer = {k: v.clone() for k, v in state["buffer"].items()}
        self.episodes.load_state_dict(state["episodes"])
        self.disc_return = state["disc_return"].clone()
        self.mask = None if state.get("mask") is None else state["mask"].clone()
        if self.reward_norm is not None:
            self.reward_norm.load_state_dict(state["reward_norm"])
        restore_env_states(self.envs, state["envs"], reseed=self.seed + 7919 * self.rollouts)
