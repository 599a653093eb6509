"""Save and load a ``dict[str, Stateful]``: atomic, checksummed, pickle-free.

Tensors go to safetensors (``step-<N>/model.safetensors`` is loadable by safetensors alone),
everything else to JSON; nothing is ever unpickled. See ``store.py`` for the layout and the
crash-safety argument, ``format.py`` for the JSON encoding.

Runs with several processes write a sharded layout (per-rank safetensors + JSON index, see
``sharded.py``); :func:`load_entry` and :func:`verify` read both layouts.
"""

from trainwell.checkpoint.rng import RNGState
from trainwell.checkpoint.saver import AsyncSaver
from trainwell.checkpoint.store import (
    Staged,
    Stateful,
    cleanup_tmp,
    latest_valid,
    list_checkpoints,
    load,
    load_entry,
    model_shapes,
    prune,
    read_manifest,
    save,
    stage,
    verify,
    write,
)

__all__ = [
    "AsyncSaver",
    "RNGState",
    "Staged",
    "Stateful",
    "cleanup_tmp",
    "latest_valid",
    "list_checkpoints",
    "load",
    "load_entry",
    "model_shapes",
    "prune",
    "read_manifest",
    "save",
    "stage",
    "verify",
    "write",
]
