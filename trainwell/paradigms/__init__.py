"""Paradigms as plug-ins: each module builds the Job (model, source, objective, evaluation) for its
kind of data, registered here by the data section's name. The engine runs any Job the same way
and imports none of them.

    text                      self-supervised next/masked token (text.py)
    sklearn, image_folder,    supervised classification/regression; unsupervised density and
    table                     clustering on the same samples (supervised.py, density.py, clustering.py)
    gym, replay               reinforcement learning: PPO rollouts, DQN replay (rl.py)
    sft, pairs, prompts       learning from preferences on a language model: SFT, reward model, DPO,
                              PPO, GRPO (preferences.py)
    module:function           the user's own data (custom.py), as are Python objects given to
                              ``trainwell.fit`` (data.name = "python")

A new paradigm registers its builder with :func:`register`.
"""

from __future__ import annotations

from typing import Callable

import torch

from trainwell.config.schema import Config
from trainwell.engine.job import Job
from trainwell.errors import ConfigError

Builder = Callable[[Config, torch.device], Job]

_EXTRA: dict[str, Builder] = {}


def builders() -> dict[str, Builder]:
    """Data section name -> Job builder (modules imported on first use: gymnasium, scikit-learn and
    friends are slow to import, and a run needs one of them)."""
    from trainwell.paradigms import preferences, rl, supervised, text

    return {"text": text.text_job, "sklearn": supervised.array_job, "image_folder": supervised.array_job,
            "table": supervised.array_job, "gym": rl.ppo_job, "replay": rl.dqn_job, "sft": preferences.sft_job,
            "pairs": preferences.pairs_job, "prompts": preferences.prompts_job, **_EXTRA}


def register(name: str, builder: Builder) -> None:
    """Add a paradigm: ``data.name = name`` runs ``builder(cfg, device) -> Job``."""
    _EXTRA[name] = builder


def build_job(cfg: Config, device: torch.device) -> Job:
    """The Job for ``cfg``, on ``device``."""
    from trainwell.config.imports import is_import_path

    name = cfg.data.name
    if is_import_path(name):
        from trainwell.paradigms.custom import import_job

        return import_job(cfg, device)
    if name == "python":
        raise ConfigError("this run was trained on Python objects passed to trainwell.fit(), which a recipe "
                          "cannot rebuild; call trainwell.fit() again with the same model, data and objective "
                          "(and resume=True to continue it).")
    found = builders()
    if name not in found:
        raise ConfigError(f"data.name = {name!r} has no paradigm; choose one of {', '.join(found)} or a "
                          f"'module:function' of your own.")
    return found[name](cfg, device)
