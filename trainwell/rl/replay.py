"""DQN's data source: act epsilon-greedily, store transitions in a replay buffer, and yield
minibatches of (observation, action, TD target) sampled uniformly from it (Mnih et al. 2015).

The target network is part of the source: it turns sampled transitions into regression targets,
so the objective stays a pure function of (model, batch). It is refreshed by environment steps,
as Stable-Baselines3's ``target_update_interval`` is: a copy whenever the env-step count passes a
multiple of ``target_every_env_steps``. The online network only changes between collections, so
the copy is made once at the end of a collection (the same network SB3 copies during it) and
stays fixed for the burst of updates that follows. Exact resume: the state holds the
buffer contents and write position, the target network, the sampling/exploration RNG, the
counters that drive collection and target copies, the episode bookkeeping and every
sub-environment's state (see :mod:`trainwell.rl.envs`).
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch

from trainwell.rl.envs import Episodes, env_states, greedy_action, make_envs, restore_env_states


class ReplaySource:
    def __init__(self, model: torch.nn.Module, *, env_id: str, num_envs: int, buffer_size: int,
                 learning_starts: int, collect_steps: int, updates_per_collect: int, batch_size: int,
                 gamma: float, target_every_env_steps: int, double_q: bool, epsilon: tuple[float, float, int], seed: int):
        self.model, self.seed, self.n = model, seed, num_envs
        self.envs = make_envs(env_id, num_envs)
        self.capacity, self.learning_starts = buffer_size, learning_starts
        self.collect_steps, self.updates_per_collect = collect_steps, updates_per_collect
        self.batch_size, self.gamma, self.double_q = batch_size, gamma, double_q
        self.target_every = target_every_env_steps
        self.eps_start, self.eps_end, self.eps_steps = epsilon
        obs, _ = self.envs.reset(seed=seed)
        self.obs = np.asarray(obs, dtype=np.float32)
        dim = self.obs.shape[1:]
        self.buf = {"obs": np.zeros((buffer_size, *dim), np.float32), "next_obs": np.zeros((buffer_size, *dim), np.float32),
                    "actions": np.zeros(buffer_size, np.int64), "rewards": np.zeros(buffer_size, np.float32),
                    "terminated": np.zeros(buffer_size, np.float32)}
        self.pos = self.size = 0
        self.steps = 0  # env steps taken (summed over the vector envs)
        self.updates = 0  # minibatches served (optimizer steps)
        self.rng = np.random.Generator(np.random.PCG64(seed))  # exploration and sampling
        self.target = copy.deepcopy(model).requires_grad_(False).eval()
        self.episodes = Episodes(num_envs)

    def epsilon(self) -> float:
        frac = min(1.0, self.steps / max(1, self.eps_steps))
        return self.eps_start + frac * (self.eps_end - self.eps_start)

    def env_steps(self) -> int:
        return self.steps

    def __iter__(self) -> "ReplaySource":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        if self.steps < self.learning_starts:
            self.collect(self.learning_starts - self.steps)
        if self.updates % self.updates_per_collect == 0:
            self.collect(self.collect_steps)
        idx = self.rng.integers(0, self.size, self.batch_size)
        b = {k: torch.from_numpy(v[idx]) for k, v in self.buf.items()}
        self.updates += 1
        return {"obs": b["obs"], "actions": b["actions"], "target": self.td_target(b)}

    @torch.no_grad()
    def td_target(self, b: dict[str, torch.Tensor]) -> torch.Tensor:
        """r + gamma * Q_target(s', a*) for non-terminal s'; a* = argmax of the online network
        (double DQN) or of the target network. (B,)"""
        device = next(self.target.parameters()).device
        nxt = b["next_obs"].to(device)
        q_next = self.target(nxt)
        if self.double_q:
            was = self.model.training
            self.model.eval()
            best = self.model(nxt).argmax(-1, keepdim=True)
            self.model.train(was)
        else:
            best = q_next.argmax(-1, keepdim=True)
        future = q_next.gather(-1, best).squeeze(-1).float().cpu()
        return b["rewards"] + self.gamma * (1 - b["terminated"]) * future

    @torch.no_grad()
    def collect(self, env_steps: int) -> None:
        """Act epsilon-greedily for ``env_steps`` steps (rounded up to whole vector steps), then
        refresh the target network if the env-step count passed a multiple of target_every."""
        copies = self.steps // self.target_every
        device = next(self.model.parameters()).device
        for _ in range(max(1, -(-env_steps // self.n))):
            explore = self.rng.random(self.n) < self.epsilon()
            random_actions = self.rng.integers(0, self.envs.single_action_space.n, self.n)
            if explore.all():
                actions = random_actions
            else:
                greedy = greedy_action(self.model, torch.from_numpy(self.obs).to(device)).cpu().numpy()
                actions = np.where(explore, random_actions, greedy)
            nxt, reward, term, trunc, info = self.envs.step(actions)
            ended = np.logical_or(term, trunc)
            # SAME_STEP autoreset: an ended episode's true last observation is in info["final_obs"]
            next_obs = np.array(nxt, dtype=np.float32)
            for i in np.flatnonzero(ended):
                next_obs[i] = info["final_obs"][i]
            rows = (self.pos + np.arange(self.n)) % self.capacity
            for key, value in (("obs", self.obs), ("next_obs", next_obs), ("actions", actions),
                               ("rewards", reward), ("terminated", term)):
                self.buf[key][rows] = value
            self.pos = int((self.pos + self.n) % self.capacity)
            self.size = min(self.capacity, self.size + self.n)
            self.steps += self.n
            self.episodes.step(reward, ended)
            self.obs = np.asarray(nxt, dtype=np.float32)
        if self.steps // self.target_every > copies:
            self.target.load_state_dict(self.model.state_dict())

    def episode_stats(self) -> dict[str, float]:
        return {**self.episodes.stats(self.steps), "rl/epsilon": self.epsilon(), "rl/buffer_size": float(self.size)}

    # ------------------------------------------------------------------ Stateful
    def state_dict(self) -> dict[str, Any]:
        # only the filled rows: a checkpoint early in training stays small
        return {"buffer": {k: torch.from_numpy(v[:self.size].copy()) for k, v in self.buf.items()},
                "pos": self.pos, "size": self.size, "steps": self.steps, "updates": self.updates,
                "rng": self.rng.bit_generator.state, "obs": torch.from_numpy(self.obs.copy()),
                "target": {k: v.clone() for k, v in self.target.state_dict().items()},
                "episodes": self.episodes.state_dict(), "envs": env_states(self.envs)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pos, self.size = int(state["pos"]), int(state["size"])
        self.steps, self.updates = int(state["steps"]), int(state["updates"])
        for k, v in state["buffer"].items():
            self.buf[k][:self.size] = v.numpy()
        self.rng.bit_generator.state = state["rng"]
        self.obs = state["obs"].numpy().copy()
        self.target.load_state_dict(state["target"])
        self.episodes.load_state_dict(state["episodes"])
        restore_env_states(self.envs, state["envs"], reseed=self.seed + 7919 * self.updates)
