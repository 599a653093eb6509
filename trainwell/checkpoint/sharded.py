"""Read checkpoints written by several ranks (layout "sharded"); see distributed/checkpoint.py.

Layout of one sharded checkpoint ``<root>/step-<N>/``::

    shard-00000-of-00002.safetensors   rank 0's tensors: its rows of every sharded tensor, plus
    shard-00001-of-00002.safetensors   the replicated ones (rank 0 only); keys "<entry>/<key>"
    index.json                         per entry: the JSON structure (format.py), and per tensor
                                       its global shape, dtype and pieces [rank, first row, rows];
                                       per-rank entries (RNG streams): one structure per rank
    manifest.json                      as for a single-process checkpoint, plus "layout": "sharded"

Tensors are sharded along dim 0 only (FSDP2's ``Shard(0)``), so a piece is a row range and a
reader with any number of ranks reads exactly the rows it needs (safetensors slices lazily).
Nothing here unpickles and nothing needs torch.distributed: a single process (``trainwell
generate``/``eval``) assembles full tensors from the pieces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

from trainwell.checkpoint.format import decode
from trainwell.errors import CheckpointError

INDEX = "index.json"
LAYOUT = "sharded"


def is_sharded(manifest: dict[str, Any]) -> bool:
    return manifest.get("layout") == LAYOUT


def shard_rows(rows: int, ranks: int, coord: int) -> tuple[int, int]:
    """Rows [lo, hi) of rank ``coord``: torch.chunk's split, the one FSDP2's Shard(0) uses."""
    size = -(-rows // ranks) if rows else 0
    lo = min(coord * size, rows)
    return lo, min(lo + size, rows)


class ShardReader:
    """Rows of the tensors of one sharded checkpoint, read lazily from the rank files."""

    def __init__(self, ckpt_dir: Path):
        self.dir = Path(ckpt_dir)
        try:
            self.index = json.loads((self.dir / INDEX).read_text())
        except (OSError, ValueError) as e:
            raise CheckpointError(f"sharded checkpoint index {self.dir / INDEX} cannot be read ({e}); the "
                                  f"checkpoint is corrupt, resume from an earlier one.") from e
        self._files: dict[int, Any] = {}

    def _file(self, rank: int) -> Any:
        if rank not in self._files:
            self._files[rank] = safe_open(str(self.dir / self.index["files"][rank]), framework="pt")
        return self._files[rank]

    def info(self, entry: str, key: str) -> dict[str, Any]:
        try:
            return self.index["entries"][entry]["tensors"][key]
        except KeyError:
            raise CheckpointError(f"sharded checkpoint {self.dir} has no tensor {entry}/{key}; it is corrupt "
                                  f"or was written for a different model.") from None

    def rows(self, entry: str, key: str, lo: int, hi: int) -> torch.Tensor:
        """Rows [lo, hi) of the global tensor (the whole tensor for 0-dim ones)."""
        info = self.info(entry, key)
        shape = info["shape"]
        name = f"{entry}/{key}"
        if not shape:
            return self._file(info["pieces"][0][0]).get_tensor(name)
        parts = []
        for rank, first, n in sorted(info["pieces"], key=lambda p: p[1]):
            a, b = max(lo, first), min(hi, first + n)
            if a < b:
                parts.append(self._file(rank).get_slice(name)[a - first:b - first])
        out = torch.cat(parts) if parts else torch.empty((0, *shape[1:]))
        if out.shape[0] != hi - lo:
            raise CheckpointError(f"sharded checkpoint {self.dir} is missing rows of {name} (has {out.shape[0]} of "
                                  f"{hi - lo}); it is corrupt, resume from an earlier one.")
        return out

    def full(self, entry: str, key: str) -> torch.Tensor:
        shape = self.info(entry, key)["shape"]
        return self.rows(entry, key, 0, shape[0] if shape else 0)

    def shape(self, entry: str, key: str) -> tuple[int, ...]:
        return tuple(self.info(entry, key)["shape"])

    def per_rank(self, entry: str, rank: int) -> Any:
        """A per-rank entry (RNG streams) as written by ``rank``."""
        doc = self.index["per_rank"][entry][rank]
        f = self._file(rank)
        prefix = f"{entry}/"
        tensors = {k[len(prefix):]: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}
        return decode(doc["state"], tensors, where=f"entry {entry!r} (rank {rank}) of checkpoint {self.dir}")


def entry_tensor_keys(structure: Any) -> list[str]:
    """Every stored tensor key an entry's JSON structure refers to."""
    found: list[str] = []

    def walk(s: Any) -> None:
        if isinstance(s, dict):
            if len(s) == 1 and "__tensor__" in s:
                found.append(s["__tensor__"])
                return
            for v in s.values():
                walk(v)
        elif isinstance(s, list):
            for v in s:
                walk(v)

    walk(structure)
    return found


def load_entry(ckpt_dir: Path, name: str) -> Any:
    """One entry's full state_dict on CPU (tensors assembled from every rank's piece)."""
    reader = ShardReader(ckpt_dir)
    entries = reader.index["entries"]
    if name not in entries:
        raise CheckpointError(f"checkpoint {ckpt_dir} has no entry {name!r} (it holds "
                              f"{', '.join(entries) or 'nothing'}); pick one of those names.")
    structure = entries[name]["state"]
    tensors = {k: reader.full(name, k) for k in set(entry_tensor_keys(structure))}
    return decode(structure, tensors, where=f"entry {name!r} of checkpoint {ckpt_dir}")


def model_shapes(ckpt_dir: Path) -> dict[str, tuple[int, ...]]:
    """Parameter name -> global shape, from the index alone (no tensor data read)."""
    reader = ShardReader(ckpt_dir)
    structure = reader.index["entries"]["model"]["state"]
    return {k: reader.shape("model", v["__tensor__"]) for k, v in structure.items()}
