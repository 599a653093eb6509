"""What travels between the server and the silos: the model's floating-point state as a Flower ArrayRecord.

Only the entries of the checkpointed model state that are floating point travel: all weights and the
float buffers (batch-norm statistics) of a fully trained model, or only the adapter matrices of a LoRA
model (``Adapted.state_dict()`` holds just those), so federated LoRA sends adapters and nothing else.
Integer buffers (batch norm's ``num_batches_tracked``) stay where they are: an average of counters
means nothing.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainwell.errors import TrainwellError


def traveling(adapted: Any) -> dict[str, torch.Tensor]:
    """The entries of the model state that are sent and aggregated, in state_dict order."""
    return {k: v for k, v in adapted.state_dict().items() if v.is_floating_point()}


def to_record(state: dict[str, torch.Tensor]) -> Any:
    """state -> ArrayRecord (numpy copies on the CPU, float32 or whatever the tensors hold)."""
    from flwr.app import Array, ArrayRecord

    return ArrayRecord({k: Array(np.array(v.detach().cpu().numpy(), copy=True)) for k, v in state.items()})


def from_record(record: Any) -> dict[str, torch.Tensor]:
    """ArrayRecord -> {name: tensor} (tensors own their memory)."""
    return {k: torch.from_numpy(np.array(a.numpy(), copy=True)) for k, a in record.items()}


def load_into(adapted: Any, record: Any) -> None:
    """Put the traveling weights of ``record`` into the model (the rest of its state is kept)."""
    own = traveling(adapted)
    got = from_record(record)
    if set(got) != set(own):
        missing = sorted(set(own) - set(got)) or sorted(set(got) - set(own))
        raise TrainwellError(f"the global model does not fit this silo's model (first differing weight: "
                             f"{missing[0]!r}); every silo and the server must run the same recipe.")
    for key, value in got.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise TrainwellError(f"the global weight {key!r} has shape {tuple(value.shape)} but this silo's "
                                 f"model has {tuple(own[key].shape)}; every silo must run the same recipe.")
    full = adapted.state_dict()
    full.update({k: v.to(full[k].dtype) for k, v in got.items()})
    adapted.load_state_dict(full)


def nbytes(record: Any) -> int:
    """Bytes of the arrays in a record (the payload; Flower's framing adds a little)."""
    return int(sum(a.numpy().nbytes for a in record.values()))
