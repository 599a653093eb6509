"""The tiny text-training setup shared by tests (a module, not conftest: several conftest.py files
exist, so `from conftest import ...` would depend on which one pytest imported first)."""

from __future__ import annotations

from pathlib import Path


def tiny_sets(text_path: Path, **extra: object) -> list[str]:
    """--set overrides that shrink the default recipe to a ~1 s CPU run."""
    values: dict[str, object] = {
        "data.source": "file", "data.path": str(text_path), "data.context": 32, "data.val_fraction": 0.1,
        "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32,
        "train.steps": 20, "train.batch_size": 8, "train.precision": "fp32", "train.threads": 1,
        "schedule.warmup_steps": 5, "eval.every": 10, "eval.batches": 2, "eval.samples": 1,
        "eval.sample_tokens": 16, "checkpoint.every": 5, "log.every": 5, "log.progress": "lines",
    }
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v!r}" if isinstance(v, str) else f"{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in values.items()]
