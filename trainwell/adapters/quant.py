"""A frozen 4-bit NF4 base for QLoRA (Dettmers et al. 2023), stored by a maintained library.

NF4: each block of 64 weights is scaled by its absolute maximum and rounded to one of 16
levels placed at quantiles of a normal distribution (0.5 byte per weight). Double quantization:
the per-block fp32 scales are themselves quantized to 8 bits in blocks of 256, which cuts the
scale overhead from 0.5 to ~0.13 bits per weight. We do not implement any of this: either
bitsandbytes (``Linear4bit``, CPU kernels since 0.49) or torchao (``NF4Tensor``, plain PyTorch)
stores the weights; bench/qlora_backends.py measures both on this machine. Gradients flow
through the dequantized weight to the input (and so to LoRA adapters below), never into it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn as nn

from trainwell.errors import ConfigError

BLOCK = 64  # weights per NF4 scale (the QLoRA paper's choice, both libraries' default)
SCALER_BLOCK = 256  # block scales per double-quantization scale (torchao)


def quantize_linears(model: nn.Module, *, backend: str, targets: list[str] | None,
                     compute_dtype: torch.dtype = torch.float32) -> int:
    """Replace the weights of ``nn.Linear`` layers whose names end with one of ``targets`` (all when
    None) by frozen NF4 copies, in place; returns how many layers were quantized."""
    chosen = [(name, m) for name, m in model.named_modules()
              if isinstance(m, nn.Linear) and (targets is None or any(
                  name == t or name.endswith("." + t) for t in targets))]
    for name, linear in chosen:
        if backend == "bitsandbytes":
            parent_name, _, attr = name.rpartition(".")
            parent = model.get_submodule(parent_name) if parent_name else model
            setattr(parent, attr, _bnb_linear(linear, compute_dtype))
        else:
            _torchao_linear(linear)
    return len(chosen)


def _bnb_linear(linear: nn.Linear, compute_dtype: torch.dtype) -> nn.Module:
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise ConfigError("adapter.quant_backend = 'bitsandbytes' needs the bitsandbytes package: "
                          "pip install 'trainwell[adapters]' (or set adapter.quant_backend = 'torchao').") from None
    q = bnb.nn.Linear4bit(linear.in_features, linear.out_features, bias=linear.bias is not None,
                          compute_dtype=compute_dtype, compress_statistics=True, quant_type="nf4",
                          device="meta")
    # Params4bit quantizes when moved to a device; compress_statistics = double quantization.
    q.weight = bnb.nn.Params4bit(linear.weight.data.to(torch.float32).contiguous(), requires_grad=False,
                                 compress_statistics=True, quant_type="nf4", blocksize=BLOCK)
    if linear.bias is not None:
        q.bias = nn.Parameter(linear.bias.data.clone(), requires_grad=False)
    # In eval mode on AVX512-BF16 CPUs bitsandbytes repacks the weight in place into another
    # layout (and fails for in_features < 64); we keep one layout so evaluation between training
    # steps changes nothing and checkpoints/resume see the same module.
    q.support_avx512bf16_for_cpu = False
    return q.to(linear.weight.device)


def _torchao_linear(linear: nn.Linear) -> None:
    try:
        from torchao.quantization import to_nf4
    except ImportError:
        raise ConfigError("adapter.quant_backend = 'torchao' needs the torchao package: "
                          "pip install 'trainwell[adapters]'.") from None
    # NF4Tensor overrides F.linear, so the nn.Linear itself stays; scaler_block_size 256 is the
    # double quantization of the block scales.
    if linear.weight.numel() % (BLOCK * SCALER_BLOCK):
        raise ConfigError(f"adapter.quant_backend = 'torchao' stores weights in blocks of {BLOCK} with their scales in "
                          f"blocks of {SCALER_BLOCK}, so a layer needs a multiple of {BLOCK * SCALER_BLOCK} weights; a "
                          f"{tuple(linear.weight.shape)} layer has {linear.weight.numel()} — use adapter.quant_backend = "
                          f"'bitsandbytes', or other adapter.targets or model sizes.")
    w = linear.weight.data.to(torch.bfloat16)  # torchao quantizes from bf16 (its supported input)
    linear.weight = nn.Parameter(to_nf4(w, block_size=BLOCK, scaler_block_size=SCALER_BLOCK), requires_grad=False)
    if linear.bias is not None:
        linear.bias.requires_grad_(False)


def _bytes(t: Any) -> int:
    """Storage bytes of a tensor; a tensor subclass (torchao's NF4Tensor) counts its inner tensors."""
    if not isinstance(t, torch.Tensor):
        return 0
    if type(t) not in (torch.Tensor, nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        names, _ = t.__tensor_flatten__()
        return sum(_bytes(getattr(t, n)) for n in names)
    return t.numel() * t.element_size()


def quant_state_bytes(state: Any) -> int:
    """Bytes of a bitsandbytes QuantState: block scales (uint8 when double-quantized), their fp32
    scales (state2), the 16-entry code books and the offset."""
    if state is None:
        return 0
    total = sum(_bytes(getattr(state, k, None)) for k in ("absmax", "code", "offset"))
    return total + quant_state_bytes(getattr(state, "state2", None))


def frozen_base_bytes(model: nn.Module) -> int:
    """Bytes held by the 4-bit weights of ``model``, scales included (full-precision ones excluded)."""
    total = 0
    for p in model.parameters():
        kind = type(p).__name__
        if kind == "Params4bit":
            total += _bytes(p.data) + quant_state_bytes(getattr(p, "quant_state", None))
        elif kind == "NF4Tensor":
            total += _bytes(p)
    return total
