"""Adapting a pretrained model from outside it: full fine-tuning, freezing, LoRA, QLoRA.

``adapt`` changes the plain model in place and returns an :class:`Adapted`, the Stateful the
checkpoint stores under "model": the whole state dict for full fine-tuning and freezing, only
the adapter weights for LoRA/QLoRA (the frozen base is rebuilt from ``train.init_from``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from trainwell.config.schema import AdapterConfig
from trainwell.errors import CheckpointError, ConfigError


@dataclass
class Adapted:
    model: nn.Module  # the model itself, changed in place
    method: str  # none | lora | qlora
    handle: Any = None  # peft LoraModel (merge, more adapters) for lora/qlora
    total_parameters: int = 0  # of the model before quantization, plus adapters

    def state_dict(self) -> dict[str, torch.Tensor]:
        if self.handle is None:
            return self.model.state_dict()
        from trainwell.adapters.lora import adapter_state

        return adapter_state(self.model)

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if self.handle is None:
            self.model.load_state_dict(state)
            return
        own = self.state_dict()
        missing = sorted(set(own) - set(state))
        if missing:
            raise CheckpointError(f"the checkpoint lacks adapter weight '{missing[0]}'; it was written with "
                                  f"different adapter settings.")
        self.model.load_state_dict(state, strict=False)

    def facts(self) -> dict[str, Any]:
        """Trainable vs total parameters and the bytes of trainable state (weights + grads + AdamW's
        two moments = 4 tensors of the trainable weights' size)."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        n_train = sum(p.numel() for p in trainable)
        weight_bytes = sum(p.numel() * p.element_size() for p in trainable)
        out: dict[str, Any] = {"adapter": self.method, "trainable_parameters": n_train,
                               "total_parameters": self.total_parameters,
                               "trainable_share": round(n_train / max(self.total_parameters, 1), 5),
                               "trainable_state_bytes": 4 * weight_bytes}
        if self.method == "qlora":
            from trainwell.adapters.quant import frozen_base_bytes

            out["quantized_base_bytes"] = frozen_base_bytes(self.model)
        return out

    def export(self, folder: Path, base_model: str = "") -> Path | None:
        """Write the adapter in PEFT's layout (lora/qlora); nothing for full fine-tuning."""
        if self.handle is None:
            return None
        from trainwell.adapters.lora import save_peft

        return save_peft(self.model, self.handle, folder, base_model=base_model)


def adapt(model: nn.Module, cfg: AdapterConfig, *, compute_dtype: torch.dtype | None = None) -> Adapted:
    total = sum(p.numel() for p in model.parameters())
    if cfg.method == "none":
        if cfg.freeze or cfg.train_only:
            from trainwell.adapters.freeze import freeze

            freeze(model, freeze=cfg.freeze, train_only=cfg.train_only)
        return Adapted(model, "none", total_parameters=total)
    if cfg.freeze or cfg.train_only:
        raise ConfigError(f"adapter.method = '{cfg.method}' trains only the adapters; adapter.freeze and "
                          f"adapter.train_only apply to method 'none' — remove them.")
    from trainwell.adapters.lora import add_lora, lora_config

    config = lora_config(cfg.rank, cfg.alpha, cfg.dropout, cfg.targets, cfg.modules_to_save)
    if cfg.method == "qlora":
        from trainwell.adapters.quant import quantize_linears

        quantize_linears(model, backend=cfg.quant_backend, targets=cfg.targets,
                         compute_dtype=compute_dtype or torch.float32)
        if cfg.quant_backend == "bitsandbytes":
            model.is_loaded_in_4bit = True  # peft's switch for its bitsandbytes 4-bit LoRA layer
    handle = add_lora(model, config)
    n_lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n or ".modules_to_save." in n)
    return Adapted(model, cfg.method, handle, total_parameters=total + n_lora)
