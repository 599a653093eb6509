"""Sharded checkpoints: every rank writes its own rows, any number of ranks reads them back.

Why not torch.distributed.checkpoint (DCP) as is: its default FileSystemWriter stores a pickled
``.metadata`` file, and non-tensor state (optimizer step counts, param_groups) as torch.save'd
(pickled) bytes — also with the Hugging Face safetensors writer/reader of torch 2.13, which
only maps tensors to files. trainwell checkpoints promise never to unpickle, so we keep DCP's
*state dicts* (``get_model_state_dict`` / ``get_optimizer_state_dict``: parameter-name keyed,
DTensor-sharded under FSDP2, the same on every world size) and write them with trainwell's own
pickle-free encoding: per-rank safetensors plus a JSON index (layout in checkpoint/sharded.py).

No rank ever holds another rank's rows while saving: rank r writes its local shard of every
FSDP-sharded tensor; replicated tensors (all of DDP's, and scalars) are written by rank 0 only.
Loading reads, for every target tensor, just the rows this rank owns under the *new* sharding,
so N ranks save and M ranks (or a single process) load.
"""

from __future__ import annotations

import json
import os
import secrets
import warnings
from pathlib import Path
from typing import Any, Mapping

import torch
from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                     set_model_state_dict, set_optimizer_state_dict)

from trainwell.checkpoint import store
from trainwell.checkpoint.format import decode, encode
from trainwell.checkpoint.sharded import INDEX, LAYOUT, ShardReader, shard_rows
from trainwell.distributed.world import World, barrier, broadcast_object, collective, gather_objects
from trainwell.errors import CheckpointError

PER_RANK = ("rng",)  # entries that differ per rank; all others are one global state


class ModelState:
    """The model as a parameter-name keyed state dict (DTensor shards under FSDP2)."""

    def __init__(self, model: torch.nn.Module):
        self.model = model

    def state_dict(self) -> dict[str, Any]:
        return get_model_state_dict(self.model)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_model_state_dict(self.model, state)


class OptimizerState:
    """Optimizer state keyed by parameter name (not position), so it reshards with the model."""

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer):
        self.model, self.optimizer = model, optimizer

    def state_dict(self) -> dict[str, Any]:
        return get_optimizer_state_dict(self.model, self.optimizer)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        set_optimizer_state_dict(self.model, self.optimizer, state)


def sharded_app_state(app_state: Mapping[str, Any], model: torch.nn.Module,
                      optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    return {**app_state, "model": ModelState(model), "optimizer": OptimizerState(model, optimizer)}


# --------------------------------------------------------------------------- save


def _is_dtensor(t: Any) -> bool:
    return type(t).__name__ == "DTensor"


def _local_rows(t: Any) -> tuple[torch.Tensor, int, int]:
    """(local tensor, first global row, rows) of a DTensor sharded on dim 0 of a 1-D mesh."""
    from torch.distributed.tensor import Replicate, Shard

    (placement,) = t.placements
    local = t.to_local()
    if isinstance(placement, Replicate):
        return local, -1, 0
    if not (isinstance(placement, Shard) and placement.dim == 0):
        raise CheckpointError(f"a tensor is sharded as {placement}; trainwell checkpoints support Shard(0) "
                              f"(FSDP2's default) only.")
    lo, hi = shard_rows(t.shape[0], t.device_mesh.size(), t.device_mesh.get_local_rank())
    if local.shape[0] != hi - lo:
        raise CheckpointError(f"a shard has {local.shape[0]} rows where torch.chunk gives {hi - lo}; this "
                              f"sharding is not supported by trainwell checkpoints.")
    return local, lo, hi - lo


def _localize(obj: Any, path: list[str], shards: dict[str, tuple[int, int, list[int]]]) -> Any:
    """Replace DTensors by their local shard; ``shards[key] = (first row, rows, global shape)``.

    Keys are built exactly as format.encode builds tensor keys ("/".join of the path).
    """
    if isinstance(obj, torch.Tensor) and _is_dtensor(obj):
        local, first, rows = _local_rows(obj)
        if first >= 0:
            shards["/".join(path) or "tensor"] = (first, rows, list(obj.shape))
        return local
    if isinstance(obj, dict):
        return {k: _localize(v, [*path, str(k)], shards) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_localize(v, [*path, str(i)], shards) for i, v in enumerate(obj)]
    if isinstance(obj, tuple):
        return tuple(_localize(v, [*path, str(i)], shards) for i, v in enumerate(obj))
    return obj


def save(ckpt_dir: Path, app_state: Mapping[str, Any], world: World, *, step: int,
         meta: dict[str, Any] | None = None) -> Path:
    """Every rank writes its shard file; rank 0 writes index + manifest and publishes atomically."""
    ckpt_dir = Path(ckpt_dir)
    root = ckpt_dir.parent
    with collective(world, f"the checkpoint save of step {step}"):
        tmp_name = broadcast_object(world, f".tmp-{ckpt_dir.name}-{os.getpid()}-{secrets.token_hex(4)}")
        tmp = root / tmp_name
        tmp.mkdir(parents=True, exist_ok=True)
        tensors: dict[str, torch.Tensor] = {}
        mine: dict[str, Any] = {"pieces": {}, "local": {}}
        docs: dict[str, Any] = {}
        for name, obj in app_state.items():
            state = obj.state_dict()
            if name in PER_RANK:
                enc = encode(name, state)
                tensors.update({f"{name}/{k}": v for k, v in enc.tensors.items()})
                mine["local"][name] = {"state": enc.structure, "aliases": enc.aliases}
                continue
            shards: dict[str, tuple[int, int, list[int]]] = {}
            enc = encode(name, _localize(state, [], shards))
            tensor_docs: dict[str, Any] = {}
            for key, t in enc.tensors.items():
                if key in shards:
                    first, rows, shape = shards[key]
                    mine["pieces"][f"{name}/{key}"] = [world.rank, first, rows]
                    tensors[f"{name}/{key}"] = t
                else:  # replicated: rank 0 writes it whole
                    shape = list(t.shape)
                    if world.main:
                        mine["pieces"][f"{name}/{key}"] = [0, 0, shape[0] if shape else 0]
                        tensors[f"{name}/{key}"] = t
                tensor_docs[key] = {"shape": shape, "dtype": str(t.dtype).removeprefix("torch.")}
            docs[name] = {"state": enc.structure, "aliases": enc.aliases, "tensors": tensor_docs}
        file = f"shard-{world.rank:05d}-of-{world.size:05d}.safetensors"
        try:
            store._save_safetensors(tensors, tmp / file, {"format": store.FORMAT_NAME, "rank": str(world.rank)})
            mine["file"], mine["hash"] = file, store._fsync_and_hash(tmp / file)
        except OSError as e:
            mine["error"] = f"{e.strerror or e} at {e.filename or tmp}"
        everyone = gather_objects(world, mine)
        failed = [f"rank {r}: {g['error']}" for r, g in enumerate(everyone) if "error" in g]
        if failed:
            raise CheckpointError(f"could not write checkpoint {ckpt_dir} ({'; '.join(failed)}); the previous "
                                  f"checkpoints are untouched — fix the disk or path and save again.")
        if world.main:
            for name, doc in docs.items():
                for key, tdoc in doc["tensors"].items():
                    tdoc["pieces"] = [g["pieces"][f"{name}/{key}"] for g in everyone
                                      if f"{name}/{key}" in g["pieces"]]
            index = {"world_size": world.size, "files": [g["file"] for g in everyone], "entries": docs,
                     "per_rank": {n: [g["local"][n] for g in everyone] for n in mine["local"]}}
            files = {g["file"]: g["hash"] for g in everyone}
            files[INDEX] = store._write_bytes(tmp / INDEX, store._dumps(index, allow_nan=False))
            manifest = {"format": store.FORMAT_NAME, "version": store.FORMAT_VERSION, "layout": LAYOUT,
                        "world_size": world.size, "step": int(step), "entries": list(app_state),
                        "torch_version": torch.__version__, "meta": json.loads(json.dumps(meta or {})),
                        "files": files}
            store._write_bytes(tmp / store.MANIFEST, store._dumps(manifest, allow_nan=True))
            store._fsync_dir(tmp)
            store._publish(tmp, ckpt_dir)
            store._fsync_dir(root)
        barrier(world)
    return ckpt_dir


# --------------------------------------------------------------------------- load


def _fill(target: Any, structure: Any, reader: ShardReader, entry: str) -> Any:
    """The saved value for ``structure``, written into ``target``'s tensors (its sharding) in place."""
    if isinstance(structure, list):
        return [_fill(target[i] if isinstance(target, list) and i < len(target) else None, v, reader, entry)
                for i, v in enumerate(structure)]
    if not isinstance(structure, dict):
        return structure
    if len(structure) == 1:
        ((tag, body),) = structure.items()
        if tag == "__tensor__":
            return _fill_tensor(target, body, reader, entry)
        if tag == "__intkeys__":
            return {int(k): _fill(target.get(int(k)) if isinstance(target, dict) else None, v, reader, entry)
                    for k, v in body.items()}
        if tag in ("__tuple__", "__items__", "__float__"):
            return decode(structure, {}, where=f"entry {entry!r} of checkpoint {reader.dir}")
    return {k: _fill(target.get(k) if isinstance(target, dict) else None, v, reader, entry)
            for k, v in structure.items()}


def _fill_tensor(target: Any, key: str, reader: ShardReader, entry: str) -> torch.Tensor:
    saved_shape = reader.shape(entry, key)
    if target is None:
        return reader.full(entry, key)
    if tuple(target.shape) != saved_shape:
        raise CheckpointError(f"checkpoint {reader.dir} holds {entry} tensor '{key}' with shape {saved_shape} "
                              f"but this run needs {tuple(target.shape)}; it was written for a different model.")
    if _is_dtensor(target):
        local = target.to_local()
        (placement,) = target.placements
        if type(placement).__name__ == "Replicate":
            local.copy_(reader.full(entry, key))
        else:
            lo, hi = shard_rows(target.shape[0], target.device_mesh.size(), target.device_mesh.get_local_rank())
            local.copy_(reader.rows(entry, key, lo, hi))
        return target
    target.copy_(reader.full(entry, key))
    return target


def load(ckpt_dir: Path, app_state: Mapping[str, Any], world: World, *, verified: bool = False) -> dict[str, Any]:
    """Restore ``app_state`` (model/optimizer as ModelState/OptimizerState) from a sharded checkpoint.

    ``verified``: this rank has already checked the files' sha256 (so they are not hashed again).
    """
    manifest = store.read_manifest(Path(ckpt_dir)) if verified else store.verify(Path(ckpt_dir))
    reader = ShardReader(Path(ckpt_dir))
    saved_world = int(reader.index["world_size"])
    for name, obj in app_state.items():
        if name in PER_RANK:
            if saved_world != world.size:
                warnings.warn(f"checkpoint was written by {saved_world} ranks, this run has {world.size}: random "
                              f"streams (dropout) restart from rank {world.rank % saved_world}'s state, so they "
                              f"do not continue exactly.", stacklevel=2)
            obj.load_state_dict(reader.per_rank(name, world.rank % saved_world))
            continue
        if name not in reader.index["entries"]:
            raise CheckpointError(f"checkpoint {ckpt_dir} has no entry {name!r}; it was written by a different "
                                  f"kind of run.")
        state = _fill(obj.state_dict(), reader.index["entries"][name]["state"], reader, name)
        try:
            obj.load_state_dict(state)
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise CheckpointError(f"checkpoint {ckpt_dir} entry {name!r} does not fit this run ({first}); load a "
                                  f"checkpoint written with the same model and optimizer config.") from e
    return manifest


# --------------------------------------------------------------------------- from one process


def _place(target: Any, saved: Any) -> Any:
    """``saved`` (full CPU tensors) written into ``target``'s tensors in place, each rank its rows."""
    if isinstance(saved, torch.Tensor):
        if target is None:
            return saved
        if _is_dtensor(target):
            (placement,) = target.placements
            if type(placement).__name__ == "Shard":
                lo, hi = shard_rows(target.shape[0], target.device_mesh.size(), target.device_mesh.get_local_rank())
                saved = saved[lo:hi]
            target.to_local().copy_(saved)
        else:
            target.copy_(saved)
        return target
    if isinstance(saved, dict):
        return {k: _place(target.get(k) if isinstance(target, dict) else None, v) for k, v in saved.items()}
    if isinstance(saved, list):
        return [_place(target[i] if isinstance(target, list) and i < len(target) else None, v)
                for i, v in enumerate(saved)]
    return saved


def _by_name(opt: OptimizerState, saved: dict[str, Any]) -> dict[str, Any]:
    """A single-process optimizer state_dict (keyed by parameter position) keyed by parameter name."""
    names = {id(p): n for n, p in opt.model.named_parameters()}
    order = [names[id(p)] for g in opt.optimizer.param_groups for p in g["params"]]
    return {"state": {order[int(i)]: s for i, s in saved["state"].items()},
            "param_groups": [{**g, "params": [order[int(i)] for i in g["params"]]} for g in saved["param_groups"]]}


def load_single(ckpt_dir: Path, app_state: Mapping[str, Any], world: World, *, verified: bool = False) -> None:
    """Restore a checkpoint written by ONE process into this run of several (each rank its rows).

    Every rank reads the full tensors of the single-process files and keeps its shard. Random
    streams: rank 0 continues the saved ones; the other ranks keep their own (seeded per rank).
    """
    if not verified:
        store.verify(Path(ckpt_dir))
    for name, obj in app_state.items():
        if name in PER_RANK and world.rank != 0:
            continue
        saved = store.load_entry(Path(ckpt_dir), name, verified=True)
        if isinstance(obj, OptimizerState):
            saved = _by_name(obj, saved)
        state = _place(obj.state_dict(), saved) if isinstance(obj, (ModelState, OptimizerState)) else saved
        obj.load_state_dict(state)
