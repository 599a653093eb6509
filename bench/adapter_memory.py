"""Memory of full fine-tuning vs LoRA vs QLoRA on the same GPT: peak process RSS and the bytes
of trainable state, each method in a fresh process (peak RSS only ever grows).

Per method: build the model (fp32), adapt it, build AdamW over the trainable parameters, run
--steps training steps on random tokens, and report the process's peak RSS above what it held
before the model was built (torch, peft and bitsandbytes already imported), the bytes of
trainable state (weights + gradients + AdamW's two moments) and of the frozen base.

    python bench/adapter_memory.py [--layers 12] [--width 768] [--batch 1] [--context 64]

RSS columns are above the process's RSS before the model was built. The model is built in fp32
and then quantized (QLoRA), so "peak while building" includes that transient fp32 copy; "peak
while training" is measured from the ready model (Linux VmHWM, reset after building).
Activations grow with batch x context and dominate at larger batches (try --batch 4 --context 256).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from pathlib import Path


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def status_mib(key: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) from Linux /proc/self/status."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def release_freed() -> None:
    """Hand freed heap pages back to the OS (glibc keeps them otherwise), so RSS shows live memory."""
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)


def reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # Linux: reset VmHWM to the current RSS


def one(method: str, a: argparse.Namespace) -> dict:
    import warnings

    warnings.filterwarnings("ignore")
    import torch

    import bitsandbytes  # noqa: F401  (imported before the baseline, like peft)
    import peft  # noqa: F401

    from trainwell.adapters import adapt
    from trainwell.config.schema import AdapterConfig, GPTConfig, OptimConfig
    from trainwell.engine.optim import build_optimizer
    from trainwell.models.gpt import build_gpt

    torch.manual_seed(0)
    x = torch.randint(0, 100, (a.batch, a.context + 1))
    release_freed()
    base = status_mib("VmRSS")
    model = build_gpt(GPTConfig(n_layer=a.layers, n_head=a.width // 64, n_embd=a.width), vocab_size=100,
                      context=a.context)
    kind, _, backend = method.partition(":")
    adapted = adapt(model, AdapterConfig(method=kind, rank=a.rank, quant_backend=backend or "bitsandbytes"))
    build_peak = peak_mib()  # QLoRA: includes the fp32 model that is built first, then quantized
    release_freed()  # the fp32 originals of quantized layers are garbage now
    ready = status_mib("VmRSS")
    reset_peak()
    opt = build_optimizer(model, OptimConfig(), torch.device("cpu"))
    for _ in range(a.steps):
        logits = model(x[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    f = adapted.facts()
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad
                 and type(p).__name__ not in ("Params4bit", "NF4Tensor"))
    return {"method": method, "total_parameters": f["total_parameters"],
            "trainable_parameters": f["trainable_parameters"],
            "trainable_state_mib": f["trainable_state_bytes"] / 2**20,
            "frozen_fp32_mib": frozen / 2**20,
            "frozen_4bit_mib": f.get("quantized_base_bytes", 0) / 2**20,
            "model_ready_mib": ready - base, "training_peak_mib": status_mib("VmHWM") - base,
            "build_peak_mib": build_peak - base, "loss": float(loss)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--one", default="")
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a)))
        return
    rows = []
    for method in ("none", "lora", "qlora:bitsandbytes", "qlora:torchao"):
        args = [sys.executable, __file__, "--one", method] + [f"--{k}={v}" for k, v in vars(a).items() if k != "one"]
        out = subprocess.run(args, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"GPT {a.layers} x {a.width}, batch {a.batch} x {a.context} tokens, LoRA rank {a.rank} on qkv/proj/fc, "
          f"AdamW, {a.steps} steps")
    print("| method | trainable params | trainable state (w+g+2 moments) | frozen fp32 | frozen 4-bit | "
          "RSS, model ready | peak RSS while training | peak RSS while building |")
    print("|---|---|---|---|---|---|---|---|")
    names = {"none": "full FT", "lora": "LoRA", "qlora:bitsandbytes": "QLoRA (bitsandbytes)",
             "qlora:torchao": "QLoRA (torchao)"}
    for r in rows:
        print(f"| {names[r['method']]} | {r['trainable_parameters']:,} of {r['total_parameters']:,} | "
              f"{r['trainable_state_mib']:.1f} MiB | {r['frozen_fp32_mib']:.1f} MiB | {r['frozen_4bit_mib']:.1f} MiB | "
              f"{r['model_ready_mib']:.0f} MiB | {r['training_peak_mib']:.0f} MiB | {r['build_peak_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
