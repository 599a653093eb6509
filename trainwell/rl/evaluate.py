"""Watching and scoring a policy: deterministic evaluation episodes, and a GIF of one of them."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwell.rl.envs import action_mask, greedy_action, make_env


@torch.no_grad()
def evaluate_policy(model: torch.nn.Module, env_id: str, episodes: int, seed: int,
                    env_kwargs: dict[str, Any] | None = None) -> dict[str, float]:
    """Mean return of the deterministic policy over ``episodes`` separately seeded episodes (seeds
    ``seed``, ``seed + 1``, ...). The episodes run side by side, one batched forward pass per step."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    envs = [make_env(env_id, **(env_kwargs or {})) for _ in range(episodes)]
    first = [env.reset(seed=seed + i) for i, env in enumerate(envs)]
    obs, masks = [o for o, _ in first], [action_mask(info) for _, info in first]
    returns, lengths = np.zeros(episodes), np.zeros(episodes, dtype=np.int64)
    live = list(range(episodes))
    try:
        while live:
            batch = torch.as_tensor(np.stack([obs[i] for i in live]), dtype=torch.float32, device=device)
            mask = None if masks[0] is None else torch.stack([masks[i] for i in live]).to(device)
            actions = greedy_action(model, batch, mask).cpu().numpy()
            still = []
            for i, action in zip(live, actions):
                obs[i], reward, term, trunc, info = envs[i].step(action)
                masks[i] = action_mask(info)
                returns[i] += float(reward)
                lengths[i] += 1
                if not (term or trunc):
                    still.append(i)
            live = still
    finally:
        for env in envs:
            env.close()
        model.train(was)
    return {"val/return": float(returns.mean()), "val/return_std": float(returns.std()),
            "val/length": float(lengths.mean())}


@torch.no_grad()
def run_episode(model: torch.nn.Module, env_id: str, seed: int, env_kwargs: dict[str, Any], *,
                frames: list[np.ndarray] | None = None, max_frames: int = 0) -> tuple[float, int, dict]:
    """One deterministic episode; returns (return, length, last info). With ``frames``, the env
    renders ``rgb_array`` frames into it (at most ``max_frames``)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    env = make_env(env_id, **env_kwargs, **({"render_mode": "rgb_array"} if frames is not None else {}))
    obs, info = env.reset(seed=seed)
    total, steps, done = 0.0, 0, False
    try:
        while not done:
            if frames is not None and len(frames) < max_frames:
                frames.append(env.render())
            mask = action_mask(info)
            action = greedy_action(model, torch.as_tensor(obs, dtype=torch.float32, device=device)[None],
                                   None if mask is None else mask[None].to(device))
            obs, reward, term, trunc, info = env.step(action[0].cpu().numpy())
            total, steps, done = total + float(reward), steps + 1, term or trunc
    finally:
        env.close()
        model.train(was)
    return total, steps, info


def write_gif(model: torch.nn.Module, env_id: str, seed: int, path: Path, *, env_kwargs: dict[str, Any] | None = None,
              max_frames: int = 300, width: int = 320, fps: int = 30) -> dict[str, Any]:
    """Render one deterministic evaluation episode into an animated GIF at ``path``. Rendering needs
    the environment's ``rgb_array`` mode (classic control: pygame); without it, warn and go on —
    a missing video must not fail a finished run."""
    import os

    from PIL import Image

    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen; no display needed
    frames: list[np.ndarray] = []
    try:
        total, steps, _ = run_episode(model, env_id, seed, env_kwargs or {}, frames=frames, max_frames=max_frames)
    except Exception as e:  # noqa: BLE001 (any renderer failure: missing pygame, no rgb_array mode, ...)
        print(f"warning: no episode GIF for {env_id}: rendering failed ({type(e).__name__}: {e}); "
              f"`pip install pygame` gives gymnasium's classic-control renderer.", file=sys.stderr)
        return {}
    frames = [f for f in frames if f is not None]
    if not frames:
        return {}
    h, w = frames[0].shape[:2]
    size = (width, max(1, round(h * width / w)))
    images = [Image.fromarray(np.asarray(f, dtype=np.uint8)).resize(size) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)
    return {"video": path.name, "video_return": total, "video_length": steps}
