"""A minimal hand-written PyTorch training loop: the baseline the benches compare against.

Two uses:
- ``--mode nanogpt``: the shape of nanoGPT's CPU Shakespeare recipe (random windows drawn with
  torch.randint, AdamW lr 1e-3 -> 1e-4 cosine with 100 warmup steps, beta2 0.99, weight decay
  0.1, clip 1.0, block 64, batch 12, 4 layers x 128, 2000 iterations, every 250 iterations a
  loss estimate over 20 random train and 20 random val batches and a checkpoint when val
  improves). Written here from the recipe's published settings; it is not nanoGPT's code.
- imported by engine_overhead.py: ``hand_loop`` trains any model on given batches with nothing
  but forward, backward, clip, step.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

T_START = time.perf_counter()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


def hand_loop(model, optimizer, batches, steps: int, lr_at, autocast, clip: float = 1.0,
              on_step=None) -> None:
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = lr_at(step)
        x, y = next(batches)
        with autocast():
            logits = model(x)
            loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if on_step:
            on_step(step + 1, loss)


def nanogpt_mode(args: argparse.Namespace) -> None:
    from trainwell.config.schema import GPTConfig
    from trainwell.models.gpt import GPT

    torch.manual_seed(1337)
    text = Path(args.data).read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], dtype=np.int64)
    n = int(0.9 * len(data))
    train, val = torch.from_numpy(data[:n]), torch.from_numpy(data[n:])
    block, batch = 64, 12

    def get_batch(split):
        d = train if split == "train" else val
        ix = torch.randint(len(d) - block, (batch,))
        return torch.stack([d[i:i + block] for i in ix]), torch.stack([d[i + 1:i + 1 + block] for i in ix])

    model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, context=block, dropout=0.0, bias=False),
                len(chars))
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}],
                            lr=1e-3, betas=(0.9, 0.99))

    def lr_at(it):
        if it < 100:
            return 1e-3 * (it + 1) / 101
        ratio = (it - 100) / (2000 - 100)
        return 1e-4 + 0.5 * (1 + math.cos(math.pi * ratio)) * (1e-3 - 1e-4)

    @torch.no_grad()
    def estimate():
        model.eval()
        out = {}
        for split in ("train", "val"):
            out[split] = float(torch.stack([F.cross_entropy(model(x).flatten(0, 1), y.flatten())
                                            for x, y in (get_batch(split) for _ in range(20))]).mean())
        model.train()
        return out

    best = float("inf")
    history = []
    for it in range(args.iters + 1):
        if it % 250 == 0:
            losses = estimate()
            history.append({"iter": it, **losses})
            if losses["val"] < best and it > 0:
                best = losses["val"]
                torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, args.out + ".pt")
        if it == args.iters:
            break
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        x, y = get_batch("train")
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    # a stable final number, measured the way trainwell measures it: fixed windows over all of val
    from trainwell.data.windows import eval_batches

    model.eval()
    with torch.no_grad():
        evals = eval_batches(val.numpy(), context=block, batch_size=16, batches=40)
        final = float(np.mean([float(F.cross_entropy(model(b["input"]).flatten(0, 1), b["target"].flatten()))
                               for b in evals]))
    Path(args.out).write_text(json.dumps({"history": history, "final_val_fixed": final,
                                          "seconds_in_process": time.perf_counter() - T_START}))
    os.remove(args.out + ".pt")


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mode", default="nanogpt", choices=["nanogpt"])
    p.add_argument("--data", required=True)
    p.add_argument("--iters", type=int, default=2000)
    p.add_argument("--out", required=True)
    nanogpt_mode(p.parse_args())
    sys.exit(0)
