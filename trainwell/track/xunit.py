"""The unit a person reads a run's curves against, derived from what the run dir already holds.

- language models (``data.name = "text"``): **tokens** seen. Every optimizer step consumes
  ``batch_size * grad_accum`` windows of ``data.context`` tokens (the global batch), so
  tokens = step * that, exactly (``summary.json``'s ``tokens_seen`` agrees).
- reinforcement learning: **env steps**, which the sources log as ``rl/env_steps`` with every
  training record (see :func:`env_steps_unit` for the steps in between).
- in-memory datasets (supervised, SimCLR, flows) and the user's own data: **epochs** = step *
  grad_accum / batches_per_epoch (``meta.json``); for in-memory datasets samples (step * batch)
  when the run was shorter than one epoch or its meta.json predates that key.
- anything else: optimizer steps.

Optimizer steps stay available through :meth:`XUnit.at` (step -> unit) for a secondary axis.
Reads TOML and JSON with the standard library only; numpy is the one dependency.
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STEP = "optimizer step"
RL_DATA = ("gym", "replay")
ARRAY_DATA = ("sklearn", "image_folder", "table")


@dataclass(frozen=True)
class XUnit:
    """A monotone step -> unit table; ``label`` names the unit on the axis."""

    label: str
    steps: np.ndarray  # (K,) increasing optimizer steps
    values: np.ndarray  # (K,) the unit at those steps (non-decreasing)

    @property
    def is_step(self) -> bool:
        return self.label == STEP

    def at(self, steps: Any) -> np.ndarray:
        """The unit at ``steps``: linear between table rows, clamped outside them."""
        return np.interp(np.asarray(steps, dtype=np.float64), self.steps, self.values)


def linear(label: str, per_step: float, last_step: int) -> XUnit:
    end = max(last_step, 1)
    return XUnit(label, np.array([0.0, end]), np.array([0.0, end * per_step]))


def env_steps_unit(logged: list[tuple[int, float]]) -> XUnit:
    """From the (step, rl/env_steps) pairs the RL sources log. Collection and updates alternate
    (a rollout, then its K updates), so several logged steps share one env-step count; the table
    keeps the first step that reached each count, and the updates between two collections are
    spread evenly between them instead of stacking into a vertical line."""
    steps, values = [], []
    for step, value in logged:
        if not values or value > values[-1]:
            steps.append(float(step))
            values.append(value)
    return XUnit("env steps", np.array(steps), np.array(values))


def read_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return {}


def read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    return obj if isinstance(obj, dict) else {}


def x_unit(run_dir: Path, records: list[dict]) -> XUnit:
    """The natural x unit of the run in ``run_dir`` whose metrics are ``records``."""
    run_dir = Path(run_dir)
    cfg = read_toml(run_dir / "config.toml")
    data, train = cfg.get("data", {}), cfg.get("train", {})
    steps = [int(r["step"]) for r in records if isinstance(r.get("step"), int)]
    last = max(steps, default=1)
    batch = int(train.get("batch_size", 0)) * int(train.get("grad_accum", 1))

    env = sorted({int(r["step"]): float(r["rl/env_steps"]) for r in records
                  if isinstance(r.get("step"), int) and isinstance(r.get("rl/env_steps"), (int, float))}.items())
    if env:
        return env_steps_unit(env)
    if data.get("name") == "text" and batch and data.get("context"):
        return linear("tokens", float(batch * int(data["context"])), last)
    # in-memory samples, or the user's own data when its source counts batches per epoch
    per_epoch = read_json(run_dir / "meta.json").get("batches_per_epoch")
    accum = int(train.get("grad_accum", 1))
    if data.get("name") != "text" and isinstance(per_epoch, int) and per_epoch > 0 and last * accum >= per_epoch:
        return linear("epoch", accum / per_epoch, last)
    if data.get("name") in ARRAY_DATA and batch:
        return linear("samples", float(batch), last)
    return linear(STEP, 1.0, last)
