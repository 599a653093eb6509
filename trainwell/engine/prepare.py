"""The model as trained: pretrained weights (train.init_from), then the adapter method.

Applied from outside the plain model, to every paradigm alike (full fine-tuning, freezing,
LoRA, QLoRA live in trainwell/adapters).
"""

from __future__ import annotations

from pathlib import Path

import torch

from trainwell import checkpoint as ckpt
from trainwell.adapters import Adapted, adapt
from trainwell.config.schema import Config
from trainwell.errors import CheckpointError


def prepare_model(cfg: Config, model: torch.nn.Module, compute_dtype: torch.dtype | None) -> tuple[Adapted, list[str]]:
    """Pretrained weights (train.init_from), then the adapter method; returns notes to print."""
    notes = [init_weights(model, Path(cfg.train.init_from))] if cfg.train.init_from else []
    if cfg.adapter.method != "none" and not cfg.train.init_from:
        notes.append(f"note: adapter.method = '{cfg.adapter.method}' without train.init_from adapts a randomly "
                     f"initialised base")
    adapted = adapt(model, cfg.adapter, compute_dtype=compute_dtype)
    f = adapted.facts()
    notes.append(f"adapter {f['adapter']}: training {f['trainable_parameters']:,} of {f['total_parameters']:,} "
                 f"parameters ({100 * f['trainable_share']:.2f}%)")
    return adapted, notes


def init_weights(model: torch.nn.Module, path: Path) -> str:
    """Copy every weight of a checkpoint whose name and shape match (transfer learning).

    ``load_entry`` checks the sha256 of the files it reads (the manifest, state and model file),
    so the checkpoint is hashed once here, not verified first and hashed again.
    """
    saved = ckpt.load_entry(path, "model")
    own = model.state_dict()
    matched = {k: v for k, v in saved.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not matched:
        raise CheckpointError(f"train.init_from = {path}: no weight of that checkpoint matches this model's "
                              f"names and shapes; it holds a different architecture.")
    model.load_state_dict(matched, strict=False)
    skipped = sorted(set(saved) - set(matched))
    fresh = sorted(set(own) - set(matched))
    note = f"initialised {len(matched)}/{len(own)} weights from {path}"
    if skipped:
        note += f"; skipped {len(skipped)} that do not fit (e.g. {skipped[0]})"
    if fresh:
        note += f"; {len(fresh)} start fresh (e.g. {fresh[0]})"
    return note
