"""Judge a placement policy on held-out netlists against the random and greedy placers, and draw
the comparison (placement.png, placement.json)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwell.rl.placement import (STUCK_REWARD, MacroPlacementEnv, greedy_placement, heldout_id, hpwl,
                                    placement_figure, random_placement)


def make_env(env_id: str) -> MacroPlacementEnv:
    from trainwell.rl.envs import make_env as make_gym_env

    env = make_gym_env(env_id).unwrapped
    assert isinstance(env, MacroPlacementEnv), env_id
    return env


@torch.no_grad()
def agent_placement(model: torch.nn.Module, env: MacroPlacementEnv, netlist_id: int) -> np.ndarray | None:
    """The deterministic policy's placement (argmax over legal cells), or None if it got stuck."""
    device = next(model.parameters()).device
    obs, info = env.reset(options={"netlist": netlist_id})
    done = False
    while not done:
        x = torch.as_tensor(obs, dtype=torch.float32, device=device)[None]
        mask = torch.as_tensor(info["action_mask"], device=device)[None]
        action = int(model.act(x, deterministic=True, mask=mask)[0])
        obs, _, done, _, info = env.step(action)
    return env.corners.copy() if "hpwl" in info else None


def compare(model: torch.nn.Module, env_id: str, netlists: int, seed: int,
            cache: dict[int, tuple[float | None, float | None]] | None = None) -> dict[str, float]:
    """Mean HPWL of agent, random and greedy placement over held-out netlists ``seed .. seed+netlists-1``
    and the ratios agent/random, agent/greedy (over netlists that all three placed completely)."""
    was = model.training
    model.eval()
    env = make_env(env_id)
    rows, stuck, returns = [], 0, []
    for k in range(seed, seed + netlists):
        nid = heldout_id(k)
        corners = agent_placement(model, env, nid)
        nl = env.netlist
        assert nl is not None
        if cache is None or nid not in cache:
            rand = random_placement(nl, env.grid, np.random.default_rng(k))
            greedy = greedy_placement(nl, env.grid)
            base = (None if rand is None else hpwl(nl, rand), None if greedy is None else hpwl(nl, greedy))
            if cache is not None:
                cache[nid] = base
        else:
            base = cache[nid]
        if corners is None:
            stuck += 1
            returns.append(STUCK_REWARD)
            continue
        wl = hpwl(nl, corners)
        returns.append(-wl / (env.nets * env.grid))
        if base[0] is not None and base[1] is not None:
            rows.append((wl, base[0], base[1]))
    model.train(was)
    a, r, g = (np.array(c) for c in zip(*rows)) if rows else (np.array([np.nan]),) * 3
    return {"val/return": float(np.mean(returns)), "val/hpwl": float(a.mean()), "val/hpwl_random": float(r.mean()),
            "val/hpwl_greedy": float(g.mean()), "val/vs_random": float(a.mean() / r.mean()),
            "val/vs_greedy": float(a.mean() / g.mean()), "val/stuck": stuck / netlists}


def finish(model: torch.nn.Module, run_dir: Path, env_id: str, netlists: int, seed: int,
           cache: dict[int, tuple[float | None, float | None]] | None = None, draw: bool = True) -> dict[str, Any]:
    """After training: held-out comparison into summary + placement.json, and (``draw``) placement.png."""
    scores = compare(model, env_id, netlists, seed, cache)
    result = {k.replace("val/", "heldout_"): round(v, 4) for k, v in scores.items()}
    result["heldout_netlists"] = netlists
    (run_dir / "placement.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if not draw:
        return result
    env = make_env(env_id)
    nid = heldout_id(seed)
    agent = agent_placement(model, env, nid)
    nl = env.netlist
    assert nl is not None
    panels = [(nl, corners, f"{name}: HPWL {'stuck' if corners is None else f'{hpwl(nl, corners):.1f}'}")
              for name, corners in (("PPO agent", agent), ("greedy", greedy_placement(nl, env.grid)),
                                    ("random", random_placement(nl, env.grid, np.random.default_rng(seed))))]
    fig = placement_figure(panels, env.grid)
    fig.suptitle(f"held-out netlist {seed} ({nl.n} macros, {len(nl.nets)} nets, {env.grid}x{env.grid} grid)")
    fig.savefig(run_dir / "placement.png", bbox_inches="tight")
    return result
