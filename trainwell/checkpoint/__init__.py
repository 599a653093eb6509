"""Save and load a ``dict[str, Stateful]``: atomic, checksummed, pickle-free.

Tensors go to safetensors (``step-<N>/model.safetensors`` is loadable by safetensors alone),
everything else to JSON; nothing is ever unpickled. See ``store.py`` for the layout and the
crash-safety argument, ``format.py`` for the JSON encoding.

Distributed training will use torch.distributed.checkpoint (DCP) for sharded state. The API
deliberately has DCP's shape — a mapping of names to objects with
``state_dict``/``load_state_dict``, restored in place — so a DCP backend can be swapped in
behind :func:`save`/:func:`load` without touching callers.
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
    prune,
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
    "prune",
    "save",
    "stage",
    "verify",
    "write",
]
