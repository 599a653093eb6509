"""Model registry: config name -> builder of a plain nn.Module.

A builder takes the model's config section plus facts learned from the data
(``vocab_size``, ``context``, ...) and returns an ``nn.Module``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

from trainwell.models.embed import build_embed_cnn
from trainwell.models.flow import build_realnvp
from trainwell.models.actor_critic import build_actor_critic
from trainwell.models.gpt import build_gpt
from trainwell.models.hf import build_hf
from trainwell.models.mlp import build_cnn, build_mlp

Builder = Callable[..., nn.Module]

MODELS: dict[str, Builder] = {"actor_critic": build_actor_critic, "gpt": build_gpt, "encoder": build_gpt, "mlp": build_mlp, "cnn": build_cnn,
                              "realnvp": build_realnvp, "embed_cnn": build_embed_cnn, "hf": build_hf}


def build_model(cfg: Any, **data_facts: Any) -> nn.Module:
    return MODELS[cfg.name](cfg, **data_facts)
