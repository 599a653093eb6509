"""A user's map-style ``torch.utils.data.Dataset`` as a stateful, shardable source of batches.

Items are collated with torch's ``default_collate``; a batch the loop sees is always a dict of
tensors: an item that is a dict keeps its keys, a pair ``(x, y)`` becomes {"input", "target"}, a
single tensor {"input"}. The order of each epoch comes from ``(seed, epoch)`` (IndexBatches), so
the checkpoint holds two integers and a resumed run draws the same next batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import default_collate

from trainwell.data.samples import IndexBatches
from trainwell.errors import DataError


def as_batch(collated: Any, where: str) -> dict[str, torch.Tensor]:
    if isinstance(collated, dict):
        return collated
    if isinstance(collated, (list, tuple)) and len(collated) == 2:
        return {"input": collated[0], "target": collated[1]}
    if isinstance(collated, torch.Tensor):
        return {"input": collated}
    raise DataError(f"{where} yields items that collate to {type(collated).__name__}; return a dict of tensors, "
                    f"an (input, target) pair or a single tensor from __getitem__.")


def collate(dataset: Any, indices: list[int], where: str) -> dict[str, torch.Tensor]:
    return as_batch(default_collate([dataset[i] for i in indices]), where)


def is_map_style(obj: Any) -> bool:
    return hasattr(obj, "__getitem__") and hasattr(obj, "__len__") and not isinstance(obj, (dict, str))


def dataset_batches(dataset: Any, *, batch_size: int, seed: int, where: str = "the dataset") -> IndexBatches:
    """Training batches of ``dataset`` in a fresh random order each epoch."""
    n = len(dataset)
    if n == 0:
        raise DataError(f"{where} is empty (len 0); give it at least one sample.")
    collate(dataset, [0], where)  # fail now, with a message, if items do not collate
    return IndexBatches(n, lambda idx: collate(dataset, idx.tolist(), where), batch_size=batch_size, seed=seed)


def fixed_dataset_batches(dataset: Any, batch_size: int, where: str = "the evaluation dataset"
                          ) -> list[dict[str, torch.Tensor]]:
    """The whole dataset in order, for evaluation."""
    if len(dataset) == 0:
        raise DataError(f"{where} is empty (len 0); give it at least one sample or leave it out.")
    return [collate(dataset, list(range(i, min(i + batch_size, len(dataset)))), where)
            for i in range(0, len(dataset), batch_size)]
