"""Numeric precision applied from outside the model: autocast and (fp16) loss scaling."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from trainwell.errors import ConfigError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    def __init__(self, name: str, device: torch.device):
        if name == "fp16" and device.type != "cuda":
            raise ConfigError("train.precision = 'fp16' needs a CUDA GPU (it relies on loss scaling); "
                              "on CPU use 'bf16' (fast on AMX/AVX-512 CPUs) or 'fp32'.")
        self.name, self.device, self.dtype = name, device, DTYPES[name]
        # fp16's narrow exponent range underflows small gradients; the scaler multiplies the
        # loss up and skips steps whose gradients overflow. bf16 has fp32's range: no scaler.
        self.scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(self.device.type, dtype=self.dtype))
        if self.device.type == "cpu" and self.dtype == torch.bfloat16:
            # On CPU the fused (flash) attention kernel is slow in bf16 (its backward took 7x the
            # fp32 time in bench/profile); the math path runs as bf16 batched matmuls on AMX.
            from torch.nn.attention import SDPBackend, sdpa_kernel

            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
        return stack

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
