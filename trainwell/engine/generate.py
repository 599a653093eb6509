"""Autoregressive sampling in inference mode (no gradients, weights untouched)."""

from __future__ import annotations

from typing import Callable

import torch


@torch.inference_mode()
def sample_ids(model: torch.nn.Module, prompt: list[int], *, length: int, temperature: float = 0.8,
               top_k: int = 0, generator: torch.Generator | None = None) -> list[int]:
    device = next(model.parameters()).device
    context = getattr(model, "context", 1 << 30)
    ids = torch.tensor([prompt or [0]], dtype=torch.long, device=device)  # (1, T)
    for _ in range(length):
        logits = model(ids[:, -context:])[:, -1, :].float()  # (1, V)
        if temperature <= 0:
            nxt = logits.argmax(dim=-1, keepdim=True)
        else:
            logits = logits / temperature
            if top_k:
                kth = torch.topk(logits, min(top_k, logits.shape[-1])).values[:, -1:]
                logits = logits.masked_fill(logits < kth, float("-inf"))
            probs = torch.softmax(logits, dim=-1)
            nxt = torch.multinomial(probs.cpu(), 1, generator=generator).to(device)
        ids = torch.cat([ids, nxt], dim=1)
    return ids[0, len(prompt):].tolist()


def sample_text(model: torch.nn.Module, prompt: list[int], decode: Callable[[list[int]], str], *,
                n: int, length: int, temperature: float, top_k: int, seed: int) -> list[str]:
    # A private generator: sampling never disturbs the training RNG streams.
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        return [decode(prompt) + decode(sample_ids(model, prompt, length=length, temperature=temperature,
                                                   top_k=top_k, generator=g)) for _ in range(n)]
    finally:
        model.train(was_training)
