"""Make a single-process Job data-parallel: shard its data source, wrap its model (DDP or FSDP2).

The data contract: ``train.batch_size`` is the *global* batch. Rank r of N takes the r-th of N
equal slices of the very batch a single process would draw at that step, so an N-rank run
sees exactly the samples a 1-rank run sees, step for step, and the mean of the ranks' mean
losses is the 1-rank loss (a rank whose slice is shorter — the last batch of an epoch of
in-memory samples — is weighted by its share, see ``ArrayBatches.weight``).
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

import numpy as np
import torch

from trainwell.config.schema import Config
from trainwell.distributed.world import World
from trainwell.errors import ConfigError

# Sources that wrap another source keep it under one of these names (MaskedWindows, PairedViews, ...).
_INNER = ("windows", "batches")


def base_source(source: Any) -> Any:
    """The innermost source, the one that owns the position (epoch, index) and the batch size."""
    while not hasattr(source, "world_size"):
        inner = next((getattr(source, n) for n in _INNER if hasattr(source, n)), None)
        if inner is None:
            raise ConfigError(f"the data source {type(source).__name__} cannot be split across ranks "
                              f"(it has no rank/world_size); run this recipe with one process.")
        source = inner
    return source


def shard_source(source: Any, cfg: Config, world: World) -> None:
    """Give this rank its slice of every global batch (in place)."""
    base = base_source(source)
    global_batch = cfg.train.batch_size
    if global_batch % world.size:
        raise ConfigError(f"train.batch_size = {global_batch} is the global batch and must split evenly over "
                          f"{world.size} processes; use a multiple of {world.size}.")
    base.batch_size, base.rank, base.world_size = global_batch // world.size, world.rank, world.size


def batch_weight(source: Any) -> float:
    """Share of the global batch in this rank's last micro-batch, times the world size (1.0 if even)."""
    return float(getattr(base_source(source), "weight", 1.0))


def seed_rank(seed: int, rank: int) -> None:
    """Separate random streams per rank (dropout), after the model was initialised identically.

    Rank 0 keeps the single-process stream, so a 1-rank run is unchanged.
    """
    if rank == 0:
        return
    s = seed * 1_000_003 + rank
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)


def model_methods(model: torch.nn.Module) -> list[str]:
    """Public methods the model's own classes define besides forward (``log_prob``, ``embed``, ...).

    Objectives may call these instead of ``model(x)``; under DDP and FSDP they must run through
    the wrapper's forward machinery (gradient-sync hooks, parameter gathering) all the same.
    Such a method must not call forward or another public method of the same module: under FSDP the
    inner call frees the gathered parameters when it returns, while the outer one still needs them
    (share code through a private ``_method`` instead, as models/gpt.py does).
    """
    names: set[str] = set()
    for cls in type(model).__mro__:
        if cls in (torch.nn.Module, object):
            break
        names.update(n for n, v in vars(cls).items() if callable(v) and not n.startswith("_") and n != "forward")
    return sorted(names)


class _Route(torch.nn.Module):
    """DDP wraps this, so ``model.log_prob(x)`` too goes through DDP's forward: ``route("log_prob", x)``."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return getattr(self.model, method)(*args, **kwargs)


class DDPStep:
    """What the objective calls under DDP: ``step(x)`` and ``step.log_prob(x)`` run through DDP;
    any other attribute is the plain model's."""

    def __init__(self, ddp: Any, model: torch.nn.Module, methods: list[str]):
        self.ddp, self.model, self._methods = ddp, model, set(methods)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.ddp("forward", *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name in self._methods:
            return lambda *args, **kwargs: self.ddp(name, *args, **kwargs)
        return getattr(self.model, name)


def parallelize(model: torch.nn.Module, cfg: Config, world: World, precision: str) -> Any:
    """What the training step calls: DDP around ``model``, or ``model`` sharded in place by FSDP2
    (compiled if train.compile).

    FSDP2 (``fully_shard``) shards every parameter along dim 0 across ranks; each transformer
    block is its own unit (gathered just before it runs, freed after), the root holds the rest
    (embeddings, head). Mixed precision: parameters gathered in the compute dtype of
    the run's precision, gradients reduced in fp32 (Zhao et al. 2023, "PyTorch FSDP"). ``precision``: its
    resolved name, fp32 or bf16 (train.precision may say "auto"; see engine/precision.choose_precision).
    """
    methods = model_methods(model)
    if world.strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        ids = [world.device.index] if world.device is not None and world.device.type == "cuda" else None
        ddp: Any = DDP(_Route(model), device_ids=ids)
        return DDPStep(compiled(ddp, cfg), model, methods)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

    param_dtype = {"bf16": torch.bfloat16}.get(precision, torch.float32)
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
    reshard = cfg.distributed.reshard_after_forward
    for block in getattr(model, "blocks", []):
        fully_shard(block, mp_policy=mp, reshard_after_forward=reshard)
    fully_shard(model, mp_policy=mp, reshard_after_forward=reshard)
    for name in methods:  # gather the parameters around these calls as around forward
        register_fsdp_forward_method(model, name)
    return compiled(model, cfg)


def compiled(module: torch.nn.Module, cfg: Config) -> torch.nn.Module:
    """``module`` under torch.compile with train.compile_backend when train.compile is on."""
    return torch.compile(module, backend=cfg.train.compile_backend) if cfg.train.compile else module


def grad_sync(step_model: torch.nn.Module, world: World, last: bool) -> contextlib.AbstractContextManager[Any]:
    """Reduce gradients only on the last micro-batch of an accumulation (no_sync on the others)."""
    if world.strategy == "ddp":
        ddp = getattr(step_model.ddp, "_orig_mod", step_model.ddp)  # under torch.compile
        return contextlib.nullcontext() if last else ddp.no_sync()
    fsdp = getattr(step_model, "_orig_mod", step_model)
    fsdp.set_requires_gradient_sync(last)
    return contextlib.nullcontext()

