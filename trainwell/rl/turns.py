"""Multi-turn episodes for learning from execution feedback (RLEF, Gehring et al. 2024): the policy
writes a solution, the visible tests' feedback is appended, and it may try again, up to ``turns`` times.

One episode is one training row: ``prompt + c1 + f1 + c2 + f2 + c3`` (c: the policy's completions, f:
the feedback text, tokenized), where only the completions' tokens count in the loss (``mask``). An
episode ends when an attempt passes the visible tests (``feedback`` returns None for it), when the
turns are used up, or when the context is full. Its reward is that of the last attempt, scored by the
caller on the hidden tests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch


@dataclass
class Episodes:
    ids: list[list[int]]      # per row: everything after the prompt (completions and feedback)
    masks: list[list[bool]]   # per row, per token of ids: written by the policy
    last: list[str]           # per row: the text of its last attempt (what the reward scores)
    turns: list[int]          # per row: attempts made
    stopped: list[bool]       # per row: its last attempt ended by a stop (not by the token budget)


def episodes(sample: Callable[..., tuple[list[list[int]], list[bool]]], policy: torch.nn.Module,
             prompts: list[list[int]], rows: list[dict[str, Any]], generator: torch.Generator, *,
             decode: Callable[[list[int]], str], encode: Callable[[str], list[int]],
             feedback: Callable[[list[dict[str, Any]], list[str]], list[str | None]], turns: int,
             context: int, budget: int) -> Episodes:
    """Run up to ``turns`` attempts per prompt. Another attempt is made only when the row still fits
    ``context`` tokens with the feedback and a full attempt of ``budget`` tokens more."""
    n = len(prompts)
    out = Episodes([[] for _ in range(n)], [[] for _ in range(n)], [""] * n, [0] * n, [False] * n)
    active = list(range(n))
    for turn in range(turns):
        if not active:
            break
        ids, stopped = sample(policy, [prompts[i] + out.ids[i] for i in active], generator)
        texts = [decode(c) for c in ids]
        for k, i in enumerate(active):
            out.ids[i] += ids[k]
            out.masks[i] += [True] * len(ids[k])
            out.last[i], out.turns[i], out.stopped[i] = texts[k], turn + 1, stopped[k]
        if turn == turns - 1:
            break
        notes = feedback([rows[i] for i in active], texts)
        still = []
        for k, i in enumerate(active):
            if notes[k] is None:
                continue  # passed the visible tests: the episode ends here
            note = encode(notes[k])
            if len(prompts[i]) + len(out.ids[i]) + len(note) + budget > context:
                continue  # no room for another attempt
            out.ids[i] += note
            out.masks[i] += [False] * len(note)
            still.append(i)
        active = still
    return out
