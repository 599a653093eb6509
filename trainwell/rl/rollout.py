"""PPO's data source: collect a rollout with the current policy, then yield shuffled minibatches
for several epochs. To the loop it is just another stateful iterator of batches.

Exact resume: the state holds the rollout buffer, the position within its epochs, the episode
bookkeeping, and every sub-environment's state (for environments whose unwrapped object keeps
its physics in ``state``, i.e. gymnasium's classic-control set, or that has ``get_state``/``set_state``
hooks, like trainwell's macro placement) plus its RNG, and the current legal-action mask. Other environments
are re-seeded from (seed, rollout index) on resume, which restores the data stream only at a
rollout boundary.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainwell.models.actor_critic import log_prob
from trainwell.rl.gae import gae


def make_envs(env_id: str, n: int):
    import gymnasium as gym

    try:
        return gym.vector.SyncVectorEnv([lambda: gym.make(env_id) for _ in range(n)],
                                        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)
    except gym.error.Error as e:
        from trainwell.errors import ConfigError

        raise ConfigError(f"data.env_id = '{env_id}' is not a registered gymnasium environment ({e}); "
                          f"e.g. CartPole-v1, Acrobot-v1, Pendulum-v1.") from None


class PPORollouts:
    def __init__(self, model: torch.nn.Module, *, env_id: str, num_envs: int, rollout_steps: int,
                 gamma: float, lam: float, update_epochs: int, minibatch_size: int, seed: int):
        self.model, self.seed = model, seed
        self.envs = make_envs(env_id, num_envs)
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
        self.ep_return = np.zeros(num_envs)
        self.ep_length = np.zeros(num_envs, dtype=np.int64)
        self.finished: list[tuple[float, int]] = []  # (return, length) since the last log

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
        was = self.model.training
        self.model.eval()
        device = next(self.model.parameters()).device
        keys = ("obs", "actions", "logp", "values", "rewards", "next_values", "terminated", "ended")
        store: dict[str, list[torch.Tensor]] = {k: [] for k in keys}
        for _ in range(self.T):
            obs = self.obs.to(device)
            mask = None if self.mask is None else self.mask.to(device)
            dist, value = self.model(obs, mask)
            action = dist.sample()
            nxt, reward, term, trunc, info = self.envs.step(action.cpu().numpy())
            nxt_t = torch.as_tensor(nxt, dtype=torch.float32)
            # SAME_STEP autoreset: `nxt` is already the next episode's first observation where an
            # episode ended; its true last observation is in info["final_obs"] (needed to bootstrap
            # a truncated episode's value).
            boot = nxt_t.clone()
            ended = np.logical_or(term, trunc)
            for i in np.flatnonzero(ended):
                boot[i] = torch.as_tensor(info["final_obs"][i], dtype=torch.float32)
            _, next_value = self.model(boot.to(device))
            for k, v in zip(keys, (obs.cpu(), action.cpu(), log_prob(dist, action, self.continuous).cpu(),
                                   value.cpu(), torch.as_tensor(reward, dtype=torch.float32),
                                   next_value.cpu(), torch.as_tensor(term, dtype=torch.float32),
                                   torch.as_tensor(ended, dtype=torch.float32))):
                store[k].append(v)
            if mask is not None:
                store.setdefault("mask", []).append(mask.cpu())
            self.mask = action_mask(info)
            self.ep_return += reward
            self.ep_length += 1
            for i in np.flatnonzero(ended):
                self.finished.append((float(self.ep_return[i]), int(self.ep_length[i])))
                self.ep_return[i], self.ep_length[i] = 0.0, 0
            self.obs = nxt_t
        s = {k: torch.stack(v) for k, v in store.items()}  # (T, N, ...)
        adv, ret = gae(s["rewards"], s["values"], s["next_values"], s["terminated"], s["ended"],
                       self.gamma, self.lam)
        flat = lambda t: t.reshape(self.T * self.n, *t.shape[2:])  # noqa: E731
        self.buffer = {"obs": flat(s["obs"]), "actions": flat(s["actions"]), "logp": flat(s["logp"]),
                       "values": flat(s["values"]), "adv": flat(adv), "returns": flat(ret)}
        if "mask" in s:
            self.buffer["mask"] = flat(s["mask"])
        self.rollouts += 1
        self.cursor = 0
        self.model.train(was)

    def episode_stats(self) -> dict[str, float]:
        out: dict[str, float] = {"rl/env_steps": float(self.env_steps())}
        if self.finished:
            out["rl/episode_return"] = float(np.mean([r for r, _ in self.finished]))
            out["rl/episode_length"] = float(np.mean([n for _, n in self.finished]))
            self.finished.clear()
        return out

    # ------------------------------------------------------------------ Stateful
    def state_dict(self) -> dict[str, Any]:
        envs = []
        for env in self.envs.envs:
            raw = env.unwrapped
            state = getattr(raw, "state", None)
            envs.append({
                "state": None if state is None else np.asarray(state, dtype=np.float64).tolist(),
                "steps_beyond_terminated": getattr(raw, "steps_beyond_terminated", None),
                "elapsed": getattr(env, "_elapsed_steps", None),
                "rng": raw.np_random.bit_generator.state,
                "custom": raw.get_state() if hasattr(raw, "get_state") else None})
        return {"rollouts": self.rollouts, "cursor": self.cursor, "obs": self.obs.clone(),
                "buffer": {k: v.clone() for k, v in self.buffer.items()},
                "ep_return": self.ep_return.tolist(), "ep_length": self.ep_length.tolist(), "envs": envs,
                "mask": None if self.mask is None else self.mask.clone()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rollouts, self.cursor = int(state["rollouts"]), int(state["cursor"])
        self.obs = state["obs"].clone()
        self.buffer = {k: v.clone() for k, v in state["buffer"].items()}
        self.ep_return = np.array(state["ep_return"], dtype=np.float64)
        self.ep_length = np.array(state["ep_length"], dtype=np.int64)
        self.mask = None if state.get("mask") is None else state["mask"].clone()
        for env, saved in zip(self.envs.envs, state["envs"]):
            raw = env.unwrapped
            if saved.get("custom") is not None:  # envs with get_state/set_state hooks (macro placement)
                raw.set_state(saved["custom"])
            elif saved["state"] is None:  # not a classic-control env: re-seed at the rollout boundary
                env.reset(seed=self.seed + 7919 * self.rollouts)
                continue
            else:
                # the envs were reset in __init__, so raw.state exists; keep its dtype (float32 -> float64
                # -> float32 is exact)
                raw.state = np.array(saved["state"], dtype=np.asarray(raw.state).dtype)
                raw.steps_beyond_terminated = saved["steps_beyond_terminated"]
            if saved["elapsed"] is not None:
                env._elapsed_steps = saved["elapsed"]
            raw.np_random.bit_generator.state = saved["rng"]


def action_mask(info: dict[str, Any]) -> torch.Tensor | None:
    """The legal-action mask an environment reports in ``info["action_mask"]``, as a bool tensor."""
    mask = info.get("action_mask")
    return None if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool))


@torch.no_grad()
def evaluate_policy(model: torch.nn.Module, env_id: str, episodes: int, seed: int) -> dict[str, float]:
    """Mean return of the deterministic policy over ``episodes`` separately seeded episodes."""
    import gymnasium as gym

    was = model.training
    model.eval()
    device = next(model.parameters()).device
    env = gym.make(env_id)
    returns, lengths = [], []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        total, steps, done = 0.0, 0, False
        while not done:
            mask = action_mask(info)
            action = model.act(torch.as_tensor(obs, dtype=torch.float32, device=device)[None], deterministic=True,
                               mask=None if mask is None else mask[None].to(device))
            obs, reward, term, trunc, info = env.step(action[0].cpu().numpy())
            total, steps, done = total + float(reward), steps + 1, term or trunc
        returns.append(total)
        lengths.append(steps)
    env.close()
    model.train(was)
    return {"val/return": float(np.mean(returns)), "val/return_std": float(np.std(returns)),
            "val/length": float(np.mean(lengths))}
