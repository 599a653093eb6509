"""Both sides of a preference pair in one row: the prompt once, then the chosen and the rejected
completion, each completion seeing the prompt and itself only (Wang et al. 2024, "Accelerating
Direct Preference Optimization with Prefix Sharing").

A pair batch holds 2B rows, prompt + completion each (the B chosen rows, then the B rejected ones),
so the prompt is computed twice. Packed, row i is

    prompt (p tokens) | chosen completion (c) | rejected completion (r)     positions 0..p+c-1, p..p+r-1

with an attention mask that is causal except that rejected tokens do not see chosen ones. Every
completion token then has exactly the keys and positions it had in its own row, so its log-prob is
the same up to float rounding, for (p + c + r) / (2p + c + r) of the tokens: 3/4 when prompt and
completions are as long. The first token of either completion is predicted from the prompt's last
position, which the two share.

Used for models that take ``packed=`` (trainwell's GPT, and a reward model on it); other models, and
pairs whose two rows do not share their prompt, get the plain 2B-row forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainwell.models.gpt import Packed


def accepts_packed(model: torch.nn.Module) -> bool:
    """Whether ``model`` (or the module inside a DDP or torch.compile wrapper) takes ``packed=``."""
    for _ in range(4):
        if getattr(model, "accepts_packed", False):
            return True
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return False
        model = inner
    return False


@dataclass
class PackedPairs:
    ids: torch.Tensor  # (B, L) prompt | chosen | rejected, right-padded
    layout: Packed
    where: torch.Tensor  # (2B, K) the packed position whose logits predict each completion token
    targets: torch.Tensor  # (2B, K) that token
    weights: torch.Tensor  # (2B, K) float: the completion mask, 0 on padding
    last: torch.Tensor  # (2B,) the packed position of each completion's last token (a reward model's score)


MASK_BUDGET = 1 << 26  # packed rows x L x L mask entries (64 Mi bools): past that, two rows per pair
# Packed rows are padded to a multiple of this many tokens. With 8, the DPO bench's steps run 6 % faster
# (aligned kernel loops; same batches forward + backward alternating in one process, 6 rounds each) and
# peak 30 MiB lower (fewer distinct shapes for the heap to fit; bench/RESULTS.md, issue 13, session 16).
ROW_MULTIPLE = 8


def pack_pairs(ids: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor, pad_id: int = 0) -> PackedPairs | None:
    """``ids``/``mask`` (2B, T) and ``lengths`` (2B,) of a pair batch -> the packed batch, or None when
    some pair's two rows do not start their completions at the same place after the same prompt, a
    completion starts at position 0 (nothing predicts its first token), the batch is not on the CPU
    (measured there only: on CUDA the causal two-row kernels may well be faster than one masked
    row), or the attention mask would pass ``MASK_BUDGET``."""
    B = ids.shape[0] // 2
    m = mask.bool()
    if B == 0 or ids.device.type != "cpu" or not bool(m.any(1).all()):
        return None
    start = m.int().argmax(1)  # first completion token = prompt length
    sc, sr = start[:B], start[B:]
    if bool((sc != sr).any()) or bool((sc == 0).any()):
        return None
    col = torch.arange(ids.shape[1], device=ids.device)
    prompt = col[None, :] < sc[:, None]
    if bool(((ids[:B] != ids[B:]) & prompt).any()):
        return None
    p, lc, lr = sc.tolist(), (lengths[:B] - sc).tolist(), (lengths[B:] - sc).tolist()
    L = max(a + b + c for a, b, c in zip(p, lc, lr))
    L = -(-L // ROW_MULTIPLE) * ROW_MULTIPLE  # padding after the rejected side: seen by no real token
    if B * L * L > MASK_BUDGET:
        return None
    K = max(max(lc), max(lr))
    dev = ids.device
    out = torch.full((B, L), pad_id, dtype=ids.dtype, device=dev)
    pos = torch.zeros((B, L), dtype=torch.long, device=dev)
    see = torch.ones((L, L), dtype=torch.bool, device=dev).tril().repeat(B, 1, 1)
    where = torch.zeros((2 * B, K), dtype=torch.long, device=dev)
    targets = torch.zeros((2 * B, K), dtype=ids.dtype, device=dev)
    weights = torch.zeros((2 * B, K), dtype=torch.float32, device=dev)
    last = torch.zeros(2 * B, dtype=torch.long, device=dev)
    for i in range(B):
        a, c, r = p[i], lc[i], lr[i]
        out[i, :a + c] = ids[i, :a + c]
        out[i, a + c:a + c + r] = ids[B + i, a:a + r]
        pos[i, :a + c] = torch.arange(a + c, device=dev)
        pos[i, a + c:a + c + r] = torch.arange(a, a + r, device=dev)
        see[i, a + c:, a:a + c] = False  # the rejected completion (and the padding after it) never sees the chosen one
        # token a + j of a completion is predicted by the position before it: the prompt's last (a - 1)
        # for j = 0, then that completion's own previous token
        where[i, :c] = torch.arange(a - 1, a + c - 1, device=dev)
        where[B + i, :r] = torch.cat([torch.tensor([a - 1], device=dev), torch.arange(a + c, a + c + r - 1, device=dev)])
        targets[i, :c], targets[B + i, :r] = ids[i, a:a + c], ids[B + i, a:a + r]
        weights[i, :c], weights[B + i, :r] = m[i, a:a + c].float(), m[B + i, a:a + r].float()
        last[i], last[B + i] = a + c - 1, a + c + r - 1
    return PackedPairs(out, Packed(pos, see.unsqueeze(1)), where, targets, weights, last)


def packed(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> PackedPairs | None:
    """The pair batch (ids, mask, lengths) packed for ``model``, or None where the model or the pairs
    do not allow it (then one row per side)."""
    if "mask" not in batch or "lengths" not in batch or not accepts_packed(model):
        return None
    return pack_pairs(batch["ids"], batch["mask"], batch["lengths"])


def sides(x: torch.Tensor) -> torch.Tensor:
    """(B, ...) per packed row -> (2B, ...): row i for the chosen side i and for the rejected side B + i."""
    return torch.arange(2 * x.shape[0], device=x.device) % x.shape[0]


def pair_logps(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """(2B,) completion log-probs of a pair batch, chosen rows then rejected rows: packed where the model
    and the pairs allow it, else one row per side (trainwell/objectives/sequence.py)."""
    from trainwell.objectives.sequence import sequence_logps

    pk = packed(model, batch)
    if pk is None:
        return sequence_logps(model, batch["ids"], batch["mask"])
    logits = model(pk.ids, packed=pk.layout).float()  # (B, L, V)
    picked = logits[sides(logits)[:, None], pk.where]  # (2B, K, V)
    logp = picked.gather(-1, pk.targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(picked, dim=-1)
    return (logp * pk.weights).sum(-1)
