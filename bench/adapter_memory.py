"""Memory of full fine-tuning vs LoRA vs QLoRA on the same GPT: peak process RSS and the bytes
of trainable state, each method in a fresh process (peak RSS only ever grows).

Per method: build the model (fp32), adapt it, build AdamW over the trainable parameters, run
--steps training steps on random tokens, and report the process's peak RSS above what it held
before the model was built (torch, peft and bitsandbytes already imported), the bytes of
trainable state (weights + gradients + AdamW's two moments) and of the frozen base.

    python bench/adapter_memory.py [--layers 12] [--width 768] [--batch 4] [--context 256]
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
    base = peak_mib()
    model = build_gpt(GPTConfig(n_layer=a.layers, n_head=a.width // 64, n_embd=a.width), vocab_size=100,
                      context=a.context)
    adapted = adapt(model, AdapterConfig(method=method, rank=a.rank))
    if method == "qlora":
        import gc

        gc.collect()  # the fp32 originals of the quantized layers are garbage now
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
            "peak_rss_above_baseline_mib": peak_mib() - base, "loss": float(loss)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--width", type=int, default=768)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--context", type=int, default=256)
    ap.add_argument("--rank", type=int, default=8)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--one", default="")
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one, a)))
        return
    rows = []
    for method in ("none", "lora", "qlora"):
        args = [sys.executable, __file__, "--one", method] + [f"--{k}={v}" for k, v in vars(a).items() if k != "one"]
        out = subprocess.run(args, capture_output=True, text=True, cwd=Path(__file__).resolve().parent.parent)
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print(f"GPT {a.layers} x {a.width}, batch {a.batch} x {a.context} tokens, LoRA rank {a.rank} on qkv/proj/fc, "
          f"AdamW, {a.steps} steps")
    print("| method | trainable params | trainable state (w+g+2 moments) | frozen fp32 | frozen 4-bit | "
          "peak RSS above baseline |")
    print("|---|---|---|---|---|---|")
    names = {"none": "full FT", "lora": "LoRA", "qlora": "QLoRA"}
    for r in rows:
        print(f"| {names[r['method']]} | {r['trainable_parameters']:,} of {r['total_parameters']:,} | "
              f"{r['trainable_state_mib']:.1f} MiB | {r['frozen_fp32_mib']:.1f} MiB | {r['frozen_4bit_mib']:.1f} MiB | "
              f"{r['peak_rss_above_baseline_mib']:.0f} MiB |")


if __name__ == "__main__":
    main()
