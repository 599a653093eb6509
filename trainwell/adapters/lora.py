"""LoRA adapters through the peft library, on any plain nn.Module, in PEFT's on-disk layout.

LoRA (Hu et al. 2021): a frozen linear layer W gets a trainable low-rank update,
y = W x + (alpha / r) * B A x with A (r, in), B (out, r), B = 0 at the start, so training
starts exactly at the pretrained function. peft's ``LoraModel`` injects the layers in place
(our GPT stays a GPT: same forward, names gain ``.base_layer`` / ``.lora_A.<adapter>``), and
also provides merging and multiple named adapters; we only add the file layout and loading.

On disk (what ``PeftModel.from_pretrained(base, dir)`` reads): ``adapter_config.json`` (a
LoraConfig) and ``adapter_model.safetensors`` with keys ``base_model.model.<module>.lora_A.weight``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn as nn

from trainwell.errors import CheckpointError, ConfigError

CONFIG_FILE, WEIGHTS_FILE = "adapter_config.json", "adapter_model.safetensors"
PREFIX = "base_model.model."  # PeftModel -> LoraModel -> our module: the key prefix peft writes


def need_peft() -> None:
    try:
        import peft  # noqa: F401
    except ImportError:
        raise ConfigError("adapter.method = 'lora'/'qlora' needs the peft package: "
                          "pip install 'trainwell[adapters]'.") from None


def lora_config(rank: int, alpha: float, dropout: float, targets: list[str],
                modules_to_save: list[str] | None = None) -> Any:
    need_peft()
    from peft import LoraConfig

    return LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(targets),
                      bias="none", modules_to_save=list(modules_to_save) if modules_to_save else None)


def add_lora(model: nn.Module, config: Any, name: str = "default", handle: Any = None) -> Any:
    """Inject LoRA layers named ``name`` into ``model`` in place (only they stay trainable); returns
    peft's LoraModel handle, needed to merge or to add and switch further adapters."""
    from peft.tuners.lora import LoraModel

    # peft only checks module-name suffixes; a target that matches nothing should fail here, clearly.
    names = [n for n, _ in model.named_modules()]
    for t in config.modules_to_save or []:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise ConfigError(f"adapter.modules_to_save: {t!r} names no module of this model.")
    for t in config.target_modules:
        if not any(n == t or n.endswith("." + t) for n in names):
            raise ConfigError(f"adapter.targets: {t!r} names no layer of this model; linear layers here are "
                              f"{sorted({n.rsplit('.', 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear)})}.")
    if handle is None:
        return LoraModel(model, config, name)
    handle.peft_config[name] = config
    handle.inject_adapter(model, name)
    return handle


def adapter_state(model: nn.Module, name: str = "default") -> dict[str, torch.Tensor]:
    """The trained weights of adapter ``name`` (LoRA matrices and modules_to_save copies), keyed
    as in ``model.state_dict()``."""
    tag = f".{name}."
    return {k: v for k, v in model.state_dict().items()
            if tag in k and ("lora_" in k or ".modules_to_save." in k)}


def save_peft(model: nn.Module, handle: Any, folder: Path, name: str = "default",
              base_model: str = "") -> Path:
    """Write adapter ``name`` in PEFT's layout (loadable by ``PeftModel.from_pretrained``)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    state = get_peft_model_state_dict(model, adapter_name=name)  # drops the adapter name from keys
    save_file({PREFIX + k: v.detach().contiguous().cpu() for k, v in state.items()}, str(folder / WEIGHTS_FILE),
              metadata={"format": "pt"})
    config = handle.peft_config[name]
    config.base_model_name_or_path = base_model or None
    config.save_pretrained(str(folder))
    return folder


def load_peft(model: nn.Module, folder: Path, name: str = "default", handle: Any = None) -> Any:
    """Add the adapter saved in ``folder`` (PEFT layout) to ``model`` under ``name``; returns the
    LoraModel handle. The model must be the same architecture the adapter was trained on."""
    need_peft()
    from peft import LoraConfig, set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / CONFIG_FILE).is_file() or not (folder / WEIGHTS_FILE).is_file():
        raise CheckpointError(f"{folder} is not a PEFT adapter folder (needs {CONFIG_FILE} and {WEIGHTS_FILE}).")
    config = LoraConfig.from_pretrained(str(folder))
    handle = add_lora(model, config, name, handle)
    state = {k.removeprefix(PREFIX): v for k, v in load_file(str(folder / WEIGHTS_FILE)).items()}
    result = set_peft_model_state_dict(model, state, adapter_name=name)
    missing = [k for k in result.missing_keys if "lora_" in k and f".{name}." in k]
    if missing:
        raise CheckpointError(f"adapter {folder} lacks weights this model needs (e.g. {missing[0]}); it was "
                              f"trained on a different model.")
    return handle


def use_adapter(handle: Any, name: str) -> None:
    """Switch the active adapter (the others stay loaded, unused)."""
    if name not in handle.peft_config:
        raise ConfigError(f"no adapter named {name!r}; loaded: {', '.join(handle.peft_config)}.")
    handle.set_adapter(name)


def merge(handle: Any) -> nn.Module:
    """Fold the active adapter into the base weights and remove the LoRA layers (for inference):
    W' = W + (alpha / r) B A. A 4-bit base is dequantized, updated and quantized again."""
    return handle.merge_and_unload()


@contextlib.contextmanager
def adapters_off(model: nn.Module) -> Iterator[None]:
    """Run ``model`` as its frozen base: every LoRA layer's adapters switched off inside the block
    (the reference model of DPO/PPO/GRPO with LoRA, without a second copy in memory)."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    if not layers:
        raise ConfigError("the reference 'adapters' needs adapter.method = 'lora' or 'qlora' (the base without "
                          "its adapters is the reference); use reference 'model' or 'precompute' instead.")
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)
