"""The on-disk encoding of one state_dict: tensors for safetensors, everything else for JSON.

A state_dict is a nested tree of dicts / lists / tuples / scalars / tensors. :func:`encode`
splits it into

* a JSON-able *structure* in which every tensor is replaced by ``{"__tensor__": key}``, and
* a flat ``{key: tensor}`` dict that safetensors can write.

JSON cannot say "this dict has int keys", "this is a tuple" or "this float is NaN", and torch
state needs all three (optimizer state is keyed by parameter index, AdamW's ``betas`` is a
tuple, a loss scaler may hold ``inf``). Those are written as single-key marker dicts so the
round trip is exact and the file stays strict JSON (no ``NaN`` literals) that any tool parses:

    {"__tensor__": "state/0/exp_avg"}     a tensor stored under that safetensors key
    {"__tuple__": [...]}                  a tuple
    {"__intkeys__": {"0": ...}}           a dict whose keys are all ints
    {"__items__": [[key, value], ...]}    any other dict (mixed / bool / None keys, or a dict
                                          whose only key happens to be a marker name)
    {"__float__": "nan" | "inf" | "-inf"} a non-finite float

Nothing here ever unpickles: decoding is json + safetensors only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from trainwell.errors import CheckpointError

MARKERS = frozenset({"__tensor__", "__tuple__", "__intkeys__", "__items__", "__float__"})
# safetensors reserves this key for its own metadata header.
_RESERVED_KEYS = frozenset({"__metadata__"})

JSONScalar = str | int | float | bool | None


@dataclass
class EncodedEntry:
    """One app-state entry, split for writing; tensors are fresh contiguous CPU copies."""

    structure: Any
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    # alias key -> stored key, for tensors that shared storage with one already stored
    # (tied embeddings). Recorded so a plain-safetensors reader can re-tie them.
    aliases: dict[str, str] = field(default_factory=dict)


def _identity(t: torch.Tensor) -> tuple[Any, ...] | None:
    """A key equal for two tensors only if they are the very same view of the same memory.

    Tied parameters (``lm_head.weight is tok_emb.weight``) come out of ``state_dict()`` as two
    detached tensors over one storage; this finds them. Tensors that merely overlap (a slice
    of another) get different keys and are stored as separate copies, which loses the
    sharing but keeps every value right. Empty tensors have no meaningful address.
    """
    if t.numel() == 0:
        return None
    return (
        t.device,
        t.untyped_storage().data_ptr(),
        t.storage_offset(),
        tuple(t.shape),
        t.stride(),
        t.dtype,
    )


def _cpu_copy(t: torch.Tensor) -> torch.Tensor:
    """A contiguous CPU copy that owns its memory (safetensors refuses shared or strided)."""
    out = torch.empty(t.shape, dtype=t.dtype, device="cpu")
    with torch.no_grad():
        out.copy_(t.detach())
    return out


def _path_str(path: list[str]) -> str:
    return "/".join(path) if path else "<root>"


class _Encoder:
    def __init__(self, entry: str) -> None:
        self.entry = entry
        self.out = EncodedEntry(structure=None)
        self._seen: dict[tuple[Any, ...], str] = {}

    def _fail(self, path: list[str], what: str) -> CheckpointError:
        return CheckpointError(
            f"app state {self.entry!r} holds {what} at {_path_str(path)!r}, which a checkpoint "
            "cannot store; make its state_dict() return only dicts, lists, tuples, str, int, "
            "float, bool, None and torch.Tensor."
        )

    def _tensor_key(self, path: list[str]) -> str:
        # A flat model state_dict keeps its keys as-is ("blocks.0.attn.qkv.weight"): that is
        # the public contract of model.safetensors. Nested paths join with "/".
        base = "/".join(path) if path else "tensor"
        key, n = base, 0
        while key in self.out.tensors or key in _RESERVED_KEYS:
            n += 1
            key = f"{base}~{n}"
        return key

    def tensor(self, t: torch.Tensor, path: list[str]) -> dict[str, str]:
        if t.layout != torch.strided or t.is_quantized:
            raise self._fail(path, f"a {t.layout} tensor")
        ident = _identity(t)
        if ident is not None and ident in self._seen:
            stored = self._seen[ident]
            self.out.aliases[self._tensor_key(path)] = stored
            return {"__tensor__": stored}
        key = self._tensor_key(path)
        self.out.tensors[key] = _cpu_copy(t)
        if ident is not None:
            self._seen[ident] = key
        return {"__tensor__": key}

    def value(self, obj: Any, path: list[str]) -> Any:
        # bool before int/float: bool is an int subclass but JSON keeps it distinct anyway.
        if obj is None or isinstance(obj, (bool, str)):
            return obj
        if isinstance(obj, int):
            return int(obj)
        if isinstance(obj, float):
            if math.isfinite(obj):
                return float(obj)
            return {"__float__": "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")}
        if isinstance(obj, torch.Tensor):
            return self.tensor(obj, path)
        if isinstance(obj, tuple):
            return {"__tuple__": [self.value(v, [*path, str(i)]) for i, v in enumerate(obj)]}
        if isinstance(obj, list):
            return [self.value(v, [*path, str(i)]) for i, v in enumerate(obj)]
        if isinstance(obj, dict):
            return self.mapping(obj, path)
        raise self._fail(path, f"a {type(obj).__module__}.{type(obj).__qualname__}")

    def mapping(self, d: dict[Any, Any], path: list[str]) -> Any:
        keys = list(d)
        if all(isinstance(k, str) for k in keys) and not (len(keys) == 1 and keys[0] in MARKERS):
            return {k: self.value(v, [*path, k]) for k, v in d.items()}
        if keys and all(isinstance(k, int) and not isinstance(k, bool) for k in keys):
            return {"__intkeys__": {str(k): self.value(v, [*path, str(k)]) for k, v in d.items()}}
        items = []
        for k, v in d.items():
            if not (k is None or isinstance(k, (str, int, bool))):
                raise self._fail(path, f"a dict key of type {type(k).__qualname__}")
            items.append([k, self.value(v, [*path, str(k)])])
        return {"__items__": items}


def encode(entry: str, state: Any) -> EncodedEntry:
    """Split one state_dict into JSON structure + CPU tensor copies (see module docstring)."""
    enc = _Encoder(entry)
    enc.out.structure = enc.value(state, [])
    return enc.out


def decode(structure: Any, tensors: dict[str, torch.Tensor], *, where: str) -> Any:
    """Inverse of :func:`encode`. Aliased references get the same tensor object back."""
    if isinstance(structure, list):
        return [decode(v, tensors, where=where) for v in structure]
    if not isinstance(structure, dict):
        return structure
    if len(structure) == 1:
        (tag, body), = structure.items()
        if tag == "__tensor__":
            if body not in tensors:
                raise CheckpointError(
                    f"{where} refers to tensor {body!r} that is not in its safetensors file; "
                    "the checkpoint is corrupt, resume from an earlier one."
                )
            return tensors[body]
        if tag == "__tuple__":
            return tuple(decode(v, tensors, where=where) for v in body)
        if tag == "__intkeys__":
            return {int(k): decode(v, tensors, where=where) for k, v in body.items()}
        if tag == "__items__":
            return {k: decode(v, tensors, where=where) for k, v in body}
        if tag == "__float__":
            return float(body)
    return {k: decode(v, tensors, where=where) for k, v in structure.items()}
