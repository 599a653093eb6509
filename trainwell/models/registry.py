"""Model registry: config name -> builder of a plain nn.Module.

A builder takes the model's config section plus facts learned from the data
(``vocab_size``, ``context``, ...) and returns an ``nn.Module``. A name with a colon is the
user's own builder (``model.name = "my_pkg.nets:build"``), called the same way: its section's
extra keys pass through, so it should accept the facts it does not use as ``**facts``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from trainwell.config.imports import is_import_path, load_callable
from trainwell.errors import ConfigError
from trainwell.models.embed import build_embed_cnn
from trainwell.models.flow import build_realnvp
from trainwell.models.actor_critic import build_actor_critic
from trainwell.models.gpt import build_gpt
from trainwell.models.hf import build_hf, build_hf_causal
from trainwell.models.mlp import build_cnn, build_mlp

Builder = Callable[..., nn.Module]

MODELS: dict[str, Builder] = {"actor_critic": build_actor_critic, "gpt": build_gpt, "encoder": build_gpt, "mlp": build_mlp, "cnn": build_cnn,
                              "realnvp": build_realnvp, "embed_cnn": build_embed_cnn, "hf": build_hf,
                              "hf_causal": build_hf_causal}


def build_model(cfg: Any, **data_facts: Any) -> nn.Module:
    if not is_import_path(cfg.name):
        return MODELS[cfg.name](cfg, **data_facts)
    model = load_callable(cfg.name, "model.name")(cfg, **data_facts)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model.name = {cfg.name!r} returned a {type(model).__name__}, not a torch.nn.Module; "
                          f"return the model itself.")
    return model


__all__ = ["MODELS", "build_model", "is_import_path"]
