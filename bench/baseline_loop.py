"""A minimal hand-written PyTorch training loop: the baseline the benches compare against.

Imported by engine_overhead.py and profile_step.py: ``hand_loop`` trains any model on given
batches with nothing but forward, backward, clip, step. (Time to quality compares against
nanoGPT itself: bench/time_to_quality.py.)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
