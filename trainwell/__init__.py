"""trainwell: one training loop for every paradigm.

``from trainwell import train, trainer, fit, plan, generate, evaluate, load_config`` — imported lazily, so that
``import trainwell`` (and ``trainwell --help``) stays fast and free of torch.
"""

from typing import Any

from trainwell.threads import apply_defaults as _apply_thread_defaults

_apply_thread_defaults()  # OpenMP settings that share cores gracefully; must run before torch loads

from trainwell.version import __version__  # noqa: E402

__all__ = ["train", "trainer", "fit", "plan", "generate", "evaluate", "load_config", "LossOutput"]


def __getattr__(name: str) -> Any:
    if name in ("train", "trainer", "fit", "plan", "generate", "evaluate"):
        from trainwell import api

        return getattr(api, name)
    if name == "load_config":
        from trainwell.config import load_config

        return load_config
    if name == "LossOutput":
        from trainwell.objectives.base import LossOutput

        return LossOutput
    raise AttributeError(f"module 'trainwell' has no attribute {name!r}")
