"""trainwell: one training loop for every paradigm.

``from trainwell import train, generate, evaluate, load_config`` — imported lazily, so that
``import trainwell`` (and ``trainwell --help``) stays fast and free of torch.
"""

from typing import Any

from trainwell.threads import apply_defaults as _apply_thread_defaults

_apply_thread_defaults()  # OpenMP settings that share cores gracefully; must run before torch loads

__version__ = "0.1.0"
__all__ = ["train", "generate", "evaluate", "load_config"]


def __getattr__(name: str) -> Any:
    if name in ("train", "generate", "evaluate"):
        from trainwell import api

        return getattr(api, name)
    if name == "load_config":
        from trainwell.config import load_config

        return load_config
    raise AttributeError(f"module 'trainwell' has no attribute {name!r}")
