"""Transfer learning for text: the pretrained model's pretraining data.

The pretrained weights and the adapters are applied to every paradigm alike
(trainwell/engine/prepare.py); this module adds what only a text run needs.

A checkpoint records the config that wrote it (manifest meta "config"), so ``train.init_from``
tells us not only the weights but also the text they were trained on: a character model's
vocabulary (ids must keep meaning the same characters), the retain set for measuring
forgetting (its validation split), and the text to replay against forgetting (its train split).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainwell import checkpoint as ckpt
from trainwell.config.schema import TextDataConfig
from trainwell.errors import CheckpointError, ConfigError, DataError


def pretraining_data(init_from: str) -> TextDataConfig | None:
    """The text data config recorded in checkpoint ``init_from``; None if it was not a text run."""
    manifest = ckpt.read_manifest(Path(init_from))  # init_weights verifies the files when it loads them
    saved = manifest.get("meta", {}).get("config", {})
    if saved.get("data.name") != "text":
        return None
    fields = TextDataConfig.__dataclass_fields__
    values = {k[5:]: v for k, v in saved.items() if k.startswith("data.") and k[5:] in fields}
    return TextDataConfig(**values)


def pretraining_corpus(init_from: str, cache_dir: str) -> Any:
    """The pretraining text of checkpoint ``init_from`` (None if it was not trained on text)."""
    from trainwell.data.text import load_text

    data = pretraining_data(init_from)
    if data is None:
        return None
    data.cache_dir = cache_dir
    try:
        return load_text(data)
    except DataError as e:
        raise DataError(f"the pretraining text of train.init_from = {init_from} cannot be read again ({e}); "
                        f"it is needed for its vocabulary, eval.retain and data.replay_fraction.") from None


class ReplayWindows:
    """Batches that mix target-text windows with replayed pretraining windows (Stateful).

    Each batch of B sequences holds B - r target windows and r = round(B * fraction) pretraining
    windows (experience replay against catastrophic forgetting, e.g. Chaudhry et al. 2019);
    both streams keep their own position, so resume is exact.
    """

    def __init__(self, target: Any, replay: Any):
        self.target, self.replay = target, replay

    def batches_per_epoch(self) -> int:
        return self.target.batches_per_epoch()

    def __iter__(self) -> "ReplayWindows":
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        a, b = next(self.target), next(self.replay)
        return {k: torch.cat([a[k], b[k]]) for k in a}

    def state_dict(self) -> dict[str, Any]:
        return {"target": self.target.state_dict(), "replay": self.replay.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.target.load_state_dict(state["target"])
        self.replay.load_state_dict(state["replay"])


def replay_split(batch_size: int, fraction: float) -> tuple[int, int]:
    """(target, replay) sequences per batch; both at least 1 when replay is on."""
    r = round(batch_size * fraction)
    if fraction > 0 and (r < 1 or r >= batch_size):
        raise ConfigError(f"data.replay_fraction = {fraction} with train.batch_size = {batch_size} gives "
                          f"{r} replayed sequences per batch; it must be between 1 and batch_size - 1 — "
                          f"change either.")
    return batch_size - r, r


def root_vocabulary(init_from: str, cache_dir: str) -> list[str] | None:
    """The character vocabulary of the model in checkpoint ``init_from``: that of the text run at the
    root of its chain of ``train.init_from`` starting points (pretraining -> SFT -> DPO ...: a fine-tuned
    character model keeps its pretrained ids). None if the chain does not start from a text run."""
    from trainwell.data.text import load_text

    path, seen = init_from, []
    while True:
        if path in seen:
            raise CheckpointError(f"train.init_from = {init_from}: its chain of starting checkpoints loops at {path}.")
        if not (Path(path) / "manifest.json").is_file():
            raise CheckpointError(f"{path} is not a checkpoint folder (no manifest.json)"
                                  + (f"; {seen[-1]} was trained from it and its vocabulary comes from there"
                                     if seen else "") + " - pass a checkpoint folder (RUN/checkpoints/step-N).")
        seen.append(path)
        saved = ckpt.read_manifest(Path(path)).get("meta", {}).get("config", {})
        if saved.get("train.init_from"):
            path = saved["train.init_from"]
            continue
        if saved.get("data.name") != "text":
            return None
        fields = TextDataConfig.__dataclass_fields__
        data = TextDataConfig(**{k[5:]: v for k, v in saved.items() if k.startswith("data.") and k[5:] in fields})
        data.cache_dir = cache_dir
        try:
            return load_text(data).vocab
        except DataError as e:
            raise DataError(f"the pretraining text of {path} cannot be read again ({e}); the character "
                            f"vocabulary of train.init_from = {init_from} comes from it.") from None
