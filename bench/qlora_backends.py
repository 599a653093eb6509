"""Pick the 4-bit library for QLoRA by measurement: bitsandbytes vs torchao NF4 on this CPU.

Both quantize the same frozen weights to NF4 with double-quantized scales (QLoRA, Dettmers et
al. 2023); peft's LoRA layers wrap both. For each backend this prints: bytes per parameter of
the frozen base, the error of the 4-bit layer against fp32, whether gradients reach the LoRA
weights and the input, and the time of a forward+backward step relative to plain fp32
(timings are noisy on a shared machine: rerun on a quiet one).

    python bench/qlora_backends.py [--width 512] [--tokens 1024] [--layers 4] [--reps 10]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
import torch.nn as nn


def stack(width: int, layers: int) -> nn.Sequential:
    torch.manual_seed(0)
    mods: list[nn.Module] = []
    for _ in range(layers):
        mods += [nn.Linear(width, 4 * width, bias=False), nn.GELU(), nn.Linear(4 * width, width, bias=False)]
    return nn.Sequential(*mods)


def quantize(model: nn.Module, backend: str) -> nn.Module:
    from trainwell.adapters.quant import quantize_linears

    quantize_linears(model, backend=backend, targets=None)
    return model


def with_lora(model: nn.Module) -> nn.Module:
    from peft import LoraConfig
    from peft.tuners.lora import LoraModel

    targets = [str(i) for i, m in enumerate(model) if isinstance(m, nn.Linear) or hasattr(m, "weight")]
    model.is_loaded_in_4bit = True  # peft's switch for its bitsandbytes 4-bit LoRA layer
    LoraModel(model, LoraConfig(r=8, lora_alpha=16, target_modules=targets, init_lora_weights=False), "default")
    return model


def step_seconds(model: nn.Module, x: torch.Tensor, reps: int) -> float:
    times = []
    for _ in range(reps + 2):
        t0 = time.perf_counter()
        model(x).square().mean().backward()
        times.append(time.perf_counter() - t0)
    return sorted(times[2:])[len(times[2:]) // 2]  # median after warm-up


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--width", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    warnings.filterwarnings("ignore")
    from trainwell.adapters.quant import frozen_base_bytes

    ref = stack(a.width, a.layers)
    n_params = sum(p.numel() for p in ref.parameters())
    x = torch.randn(a.tokens, a.width)
    base = with_lora(stack(a.width, a.layers))
    t_fp32 = step_seconds(base, x.clone().requires_grad_(), a.reps)
    print(f"model: {a.layers} x (Linear {a.width}->{4 * a.width}->{a.width}), {n_params:,} frozen params, "
          f"{a.tokens} tokens per step, {torch.get_num_threads()} threads")
    print(f"{'backend':<14}{'bytes/param':>12}{'layer error':>12}{'grads ok':>10}{'step vs fp32':>14}")
    print(f"{'fp32 (LoRA)':<14}{4.0:>12.3f}{0.0:>12.4f}{'yes':>10}{1.0:>14.2f}")
    for backend in ("bitsandbytes", "torchao"):
        try:
            q = quantize(stack(a.width, a.layers), backend)
            with torch.no_grad():  # error of one layer (the first), relative to its fp32 output
                err = float((q[0](x) - ref[0](x)).norm() / ref[0](x).norm())
            bpp = frozen_base_bytes(q) / n_params
            q = with_lora(q)
            xi = x.clone().requires_grad_()
            q(xi).square().mean().backward()
            lora_grads = [p.grad for n, p in q.named_parameters() if "lora_" in n]
            ok = xi.grad is not None and all(g is not None and g.abs().sum() > 0 for g in lora_grads)
            t = step_seconds(q, x.clone().requires_grad_(), a.reps)
            print(f"{backend:<14}{bpp:>12.3f}{err:>12.4f}{'yes' if ok else 'NO':>10}{t / t_fp32:>14.2f}")
        except Exception as e:  # report and go on: the point is to compare what works here
            print(f"{backend:<14} failed: {type(e).__name__}: {str(e).splitlines()[0][:120]}")


if __name__ == "__main__":
    main()
