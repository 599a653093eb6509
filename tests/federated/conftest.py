"""Shared setup of the federated tests: a small digits recipe and an in-process driver."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("flwr")

RECIPE = """
description = "digits MLP, federated (tests)"
[data]
name = "sklearn"
dataset = "digits"
[model]
name = "mlp"
hidden = [32]
dropout = 0.1
[objective]
name = "classify"
[optim]
lr = 3e-3
weight_decay = 1e-4
[schedule]
name = "constant"
warmup_steps = 0
[train]
batch_size = 32
seed = 0
threads = 1
[eval]
samples = 0
[log]
plots = false
tensorboard = false
[federated]
silos = 3
rounds = 3
local_steps = 4
"""


def config(*sets: str) -> Any:
    from trainwell.config import load_config

    return load_config(text=RECIPE, overrides=list(sets))


def run_inprocess(run_dir: Path, *sets: str, fault: Any = None, cfg: Any = None) -> tuple[dict, Any, Any]:
    """Train the federated recipe with every silo called in this process; returns (summary, plan, grid)."""
    from inprocess import InProcessGrid

    from trainwell.federated.server import finish, prepare, serve

    cfg = cfg or config(*sets)
    plan = prepare(cfg, Path(run_dir), simulation=True)
    grid = InProcessGrid(cfg.federated.silos, fault)
    try:
        serve(grid, plan)
    except BaseException:
        for sink in plan.sinks:
            sink.close()
        raise
    return finish(plan), plan, grid


def final_weights(run_dir: Path) -> dict:
    from trainwell import checkpoint as ckpt

    found, _ = ckpt.latest_valid(Path(run_dir) / "checkpoints")
    assert found is not None
    return ckpt.load_entry(found, "model")


def assert_same(a: dict, b: dict) -> None:
    import torch

    assert set(a) == set(b)
    bad = [k for k in a if not torch.equal(a[k], b[k])]
    assert not bad, f"weights differ: {bad[:3]}"
