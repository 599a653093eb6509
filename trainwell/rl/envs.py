"""Gymnasium environments as trainwell uses them: vector envs, their saved state, greedy actions.

Exact resume of an RL source needs the environments' own state. Gymnasium has no general
get/set-state API, so :func:`env_states` saves what gymnasium's classic-control environments keep
(the physics vector ``unwrapped.state``, the termination counter, the TimeLimit step count and the
env's RNG). An environment may instead define ``get_state() -> dict`` / ``set_state(dict)`` on its
unwrapped object (JSON-able values or tensors). Other environments are re-seeded on restore, which
reproduces the data stream only from a fresh episode.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainwell.errors import ConfigError


def make_env(env_id: str, **kwargs: Any):
    """``gym.make`` plus one adaptation: observations that are not a flat Box (a Discrete state, a
    Dict, an image) are flattened (one-hot for Discrete), so trainwell's MLP policies take any env."""
    import gymnasium as gym

    import trainwell.rl  # noqa: F401  (registers trainwell's own environments)

    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as e:
        raise ConfigError(f"data.env_id = '{env_id}' is not a registered gymnasium environment ({e}); "
                          f"e.g. CartPole-v1, Acrobot-v1, Pendulum-v1.") from None
    space = env.observation_space
    if not (isinstance(space, gym.spaces.Box) and len(space.shape) == 1):
        env = gym.wrappers.FlattenObservation(env)
    return env


def make_envs(env_id: str, n: int, **kwargs: Any):
    import gymnasium as gym

    # make_env raises the clear error for an unknown id: SyncVectorEnv builds the envs right here
    return gym.vector.SyncVectorEnv([lambda: make_env(env_id, **kwargs) for _ in range(n)],
                                    autoreset_mode=gym.vector.AutoresetMode.SAME_STEP)


def _time_limit(env):
    """The TimeLimit wrapper in ``env``'s wrapper chain (gymnasium 1.x wrappers do not forward
    attributes), or None."""
    import gymnasium as gym

    while isinstance(env, gym.Wrapper):
        if isinstance(env, gym.wrappers.TimeLimit):
            return env
        env = env.env
    return None


def env_states(envs) -> list[dict[str, Any]]:
    """The restorable state of every sub-environment of a SyncVectorEnv."""
    out = []
    for env in envs.envs:
        raw = env.unwrapped
        if hasattr(raw, "get_state"):
            saved: dict[str, Any] = {"custom": raw.get_state()}
        else:
            state = getattr(raw, "state", None)
            saved = {"state": None if state is None else np.asarray(state, dtype=np.float64).tolist(),
                     "steps_beyond_terminated": getattr(raw, "steps_beyond_terminated", None)}
        saved["elapsed"] = getattr(_time_limit(env), "_elapsed_steps", None)
        saved["rng"] = raw.np_random.bit_generator.state
        out.append(saved)
    return out


def restore_env_states(envs, saved: list[dict[str, Any]], reseed: int) -> None:
    """Undo :func:`env_states`; environments it could not capture are reset with seed ``reseed + i``."""
    for i, (env, s) in enumerate(zip(envs.envs, saved)):
        raw = env.unwrapped
        if "custom" in s:
            raw.set_state(s["custom"])
        elif s["state"] is None:
            env.reset(seed=reseed + i)
            continue
        else:
            # the envs were reset when built, so raw.state exists; keep its dtype (float32 -> float64 ->
            # float32 is exact)
            raw.state = np.array(s["state"], dtype=np.asarray(raw.state).dtype)
            raw.steps_beyond_terminated = s["steps_beyond_terminated"]
        if s["elapsed"] is not None:
            _time_limit(env)._elapsed_steps = s["elapsed"]
        raw.np_random.bit_generator.state = s["rng"]


def action_mask(info: dict[str, Any]) -> torch.Tensor | None:
    """The legal-action mask an environment reports in ``info["action_mask"]``, as a bool tensor."""
    mask = info.get("action_mask")
    return None if mask is None else torch.as_tensor(np.asarray(mask, dtype=bool))


def greedy_action(model: torch.nn.Module, obs: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The deterministic action: the policy's mode (actor-critic) or argmax Q (a Q-network), over
    the legal actions where ``mask`` (B, A) bool is given."""
    if hasattr(model, "act"):
        return model.act(obs, deterministic=True, mask=mask)
    q = model(obs)
    return (q if mask is None else q.masked_fill(~mask, float("-inf"))).argmax(dim=-1)


class Episodes:
    """Bookkeeping of the training episodes a source plays: running return/length per env, the
    episodes finished since the last log, and env steps per second between logs."""

    def __init__(self, num_envs: int):
        import time

        self.ret = np.zeros(num_envs)
        self.length = np.zeros(num_envs, dtype=np.int64)
        self.finished: list[tuple[float, int]] = []
        self._clock = (time.perf_counter(), 0)  # (time, env steps) at the last log

    def step(self, reward: np.ndarray, ended: np.ndarray) -> None:
        self.ret += reward
        self.length += 1
        for i in np.flatnonzero(ended):
            self.finished.append((float(self.ret[i]), int(self.length[i])))
            self.ret[i], self.length[i] = 0.0, 0

    def stats(self, env_steps: int) -> dict[str, float]:
        import time

        now = time.perf_counter()
        out = {"rl/env_steps": float(env_steps),
               "rl/env_steps_per_s": (env_steps - self._clock[1]) / max(now - self._clock[0], 1e-9)}
        self._clock = (now, env_steps)
        if self.finished:
            out["rl/episode_return"] = float(np.mean([r for r, _ in self.finished]))
            out["rl/episode_length"] = float(np.mean([n for _, n in self.finished]))
            self.finished.clear()
        return out

    def state_dict(self) -> dict[str, Any]:
        return {"return": self.ret.tolist(), "length": self.length.tolist()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.ret = np.array(state["return"], dtype=np.float64)
        self.length = np.array(state["length"], dtype=np.int64)
