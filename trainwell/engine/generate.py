"""Batched autoregressive sampling with a KV cache (inference mode: no gradients, weights untouched).

Many prompts of different lengths are sampled together: they are left-padded onto one slot axis
(see trainwell/models/kv_cache.py), so each new token of every row costs one batched forward of
shape (rows, 1) against the cached keys and values instead of a forward over the whole window.
Rows that finish (a stop string or stop token) leave the batch, so the rest run on fewer rows.

Window overflow: a row's *window* is the part of its prompt + completion the model sees. It starts
as the prompt's last ``context`` tokens. When the longest window would exceed the model context,
every window is cut to its last ``keep = context - context // 4`` tokens (shorter ones stay whole)
and the cache is rebuilt by one batched forward over the new windows. So a rebuild costs one
prefill per ``context // 4`` new tokens at most, and every token is predicted from at least
``keep`` tokens of history. ``use_cache=False`` applies the same window rule but runs the whole
window for every token (the reference the cache is tested against, and the bench's baseline).

Threads: a decode step of a small model is ~80 kernels of tens of microseconds. Between them the
other OpenMP threads go to sleep (trainwell's short spin count, trainwell/threads.py) and waking
them can cost more than they save: on a 2-core Xeon a 32-row decode step of the default model ran
2.5x faster on one thread than on two (bench/RESULTS.md, "Generation"). So on CPU the first decode
steps run alternately on one thread and on torch's thread count, timed, and the rest of the call
runs on the faster (``threads=`` fixes it instead). Prefills keep every thread. The thread count
does not change the tokens here (the kernels split work over rows, not within a sum;
tests/engine/test_generate.py checks it).

Models with ``new_cache`` (trainwell's GPT; a Hugging Face causal LM through trainwell/models/hf.py,
whose cache is its own) use the cache; any other causal LM ((B, T) ids -> (B, T, V) logits) is run
row by row on its whole window per token.
"""

from __future__ import annotations

from dataclasses import dataclass, field
import time
from typing import Callable, Sequence

import torch


@dataclass
class Generation:
    ids: list[list[int]]  # new tokens per row, through the token that completed a stop
    texts: list[str] | None = None  # decoded new text per row, cut before the stop string (with decode=)
    stopped: list[bool] = field(default_factory=list)  # ended by a stop string or stop token
    forwards: int = 0  # model calls (prefills and decode steps)
    rebuilds: int = 0  # cache rebuilds after a window reached the model context
    threads: int = 0  # torch threads of the decode steps once decided (0: the call ended before that)


class DecodeThreads:
    """Runs decode steps on one thread or on ``n`` (torch's count at the start), whichever the first ``2 * trials`` steps (timed
    alternately, ``n`` first) found faster; ``fixed`` skips the trials."""

    def __init__(self, n: int, fixed: int | None = None, trials: int = 3,
                 clock: Callable[[], float] = time.perf_counter):
        self.n, self.clock, self.trials = n, clock, trials
        self.chosen = fixed if fixed is not None else (n if n <= 1 else None)
        self.times: dict[int, list[float]] = {n: [], 1: []}

    def __enter__(self) -> "DecodeThreads":
        return self

    def __exit__(self, *exc: object) -> None:
        self.all_threads()  # torch's own setting again, whatever the steps ran on

    def all_threads(self) -> None:
        """Back to ``n`` (torch's count when the call began), for a prefill or the caller."""
        torch.set_num_threads(self.n)

    def run(self, step: Callable[[], torch.Tensor]) -> torch.Tensor:
        if self.chosen is not None:
            torch.set_num_threads(self.chosen)
            return step()
        k = self.n if len(self.times[self.n]) <= len(self.times[1]) else 1
        torch.set_num_threads(k)
        t0 = self.clock()
        out = step()
        self.times[k].append(self.clock() - t0)
        if len(self.times[1]) >= self.trials:
            self.chosen = min(self.times, key=lambda t: min(self.times[t]))
        return out


def pick_next(logits: torch.Tensor, temperature: float, top_k: int,
              generator: torch.Generator | None) -> torch.Tensor:
    """(B, V) logits -> (B,) next tokens: greedy at temperature <= 0, else sampled (top-k if > 0)."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    # inverse-CDF sampling: the first token whose cumulative probability exceeds u ~ U(0, 1). Same
    # distribution as torch.multinomial, a tenth of its cost at this size (one uniform per row).
    # right=True never picks a zero-probability token (its cumulative sum equals the previous one).
    cdf = torch.softmax(logits, dim=-1).double().cumsum(dim=-1).cpu()  # (B, V)
    u = torch.rand(cdf.shape[0], 1, generator=generator, dtype=torch.float64) * cdf[:, -1:]
    return torch.searchsorted(cdf, u, right=True).clamp_max_(cdf.shape[1] - 1).squeeze(1).to(logits.device)


def _padded(windows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(w) for w in windows)
    ids = torch.full((len(windows), longest), pad_id, dtype=torch.long)
    for r, w in enumerate(windows):
        ids[r, longest - len(w):] = torch.tensor(w, dtype=torch.long)
    pad = torch.tensor([longest - len(w) for w in windows], dtype=torch.long)
    return ids.to(device), pad


@torch.inference_mode()
def generate(model: torch.nn.Module, prompts: Sequence[Sequence[int]], *, max_new_tokens: int,
             temperature: float = 0.8, top_k: int = 0, stop: Sequence[str] = (), stop_ids: Sequence[int] = (),
             decode: Callable[[list[int]], str] | None = None, generator: torch.Generator | None = None,
             use_cache: bool = True, pad_id: int = 0, on_logits: Callable[[torch.Tensor, list[int]], None] | None = None,
             threads: int | None = None) -> Generation:
    """Continue every prompt by up to ``max_new_tokens`` tokens.

    ``stop``: strings that end a row (needs ``decode``; the text is cut before the string);
    ``stop_ids``: tokens that end a row (kept as its last token). ``on_logits(logits, rows)`` sees the
    (rows, V) logits each new token was picked from, with the original indices of those rows (tests).
    An empty prompt starts from token ``pad_id``. ``threads``: torch threads for the decode steps
    (default: timed, see the module docstring); torch's own setting is restored on return.
    """
    if stop and decode is None:
        raise ValueError("stop strings need decode= (to read the generated text)")
    device = next(model.parameters()).device
    context = int(getattr(model, "context", 1 << 30))
    keep = max(1, context - context // 4)
    cached = use_cache and hasattr(model, "new_cache")
    seqs = [list(p)[-context:] or [pad_id] for p in prompts]  # each row's current window
    new: list[list[int]] = [[] for _ in prompts]
    stopped = [False] * len(prompts)
    active = list(range(len(prompts)))  # original row of each batch row
    out = Generation(ids=new, stopped=stopped)
    tail = max((len(s) for s in stop), default=0)  # a stop string spans at most this many new tokens
    stop_set = set(stop_ids)
    if not prompts or max_new_tokens <= 0:
        return _finish(out, decode, stop)

    def full_windows() -> torch.Tensor:
        """Logits (rows, V) of every active row from a forward over its whole window."""
        out.forwards += 1
        windows = [seqs[r] for r in active]
        if not hasattr(model, "new_cache"):  # a foreign model: no mask or positions, so one row at a time
            return torch.cat([model(torch.tensor([w], device=device))[:, -1] for w in windows])
        ids, pad = _padded(windows, pad_id, device)
        left = max_new_tokens - len(new[active[0]])  # tokens still to come (same for every active row)
        # room for the rest of the tokens, but no more slots than the longest row may fill
        capacity = ids.shape[1] + (left if cached else 0)
        capacity = min(capacity, context + int(pad.min()))
        nonlocal cache
        cache = model.new_cache(len(windows), capacity, pad)
        return model(ids, cache)[:, -1]

    n = torch.get_num_threads()
    pool = DecodeThreads(n, threads if threads is not None else (n if device.type != "cpu" else None))
    with pool:
        cache = None
        logits = full_windows()
        for step in range(max_new_tokens):
            if on_logits is not None:
                on_logits(logits, list(active))
            nxt = pick_next(logits, temperature, top_k, generator)  # (rows,)
            done: set[int] = set()
            for i, (r, t) in enumerate(zip(active, nxt.tolist())):
                new[r].append(t)
                seqs[r].append(t)
                if t in stop_set or (tail and any(s in decode(new[r][-tail:]) for s in stop)):
                    stopped[r] = True
                    done.add(i)
            if step == max_new_tokens - 1:
                break
            if done:
                keep_rows = [i for i in range(len(active)) if i not in done]
                if not keep_rows:
                    break
                active = [active[i] for i in keep_rows]
                nxt = nxt[keep_rows]
                if cache is not None:
                    cache.keep_rows(torch.tensor(keep_rows, device=device))
            if max(len(seqs[r]) for r in active) > context:  # a window overflows: cut all, rebuild
                for r in active:
                    del seqs[r][:-keep]
                out.rebuilds += 1
                pool.all_threads()  # a prefill: every thread
                logits = full_windows()
            elif cached:
                out.forwards += 1
                logits = pool.run(lambda: model(nxt[:, None], cache)[:, -1])  # (rows, V): one new token per row
            else:
                logits = full_windows()
    out.threads = pool.chosen or 0
    return _finish(out, decode, stop)


def _finish(out: Generation, decode: Callable[[list[int]], str] | None, stop: Sequence[str]) -> Generation:
    if decode is None:
        return out
    texts = []
    for ids in out.ids:
        text = decode(ids)
        cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=len(text))
        texts.append(text[:cut])
    out.texts = texts
    return out


def sample_text(model: torch.nn.Module, prompt: list[int], decode: Callable[[list[int]], str], *,
                n: int, length: int, temperature: float, top_k: int, seed: int,
                stop: Sequence[str] = ()) -> list[str]:
    """``n`` samples of one prompt, sampled as one batch; each is the prompt followed by its continuation."""
    # A private generator: sampling never disturbs the training RNG streams.
    g = torch.Generator().manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        gen = generate(model, [prompt] * n, max_new_tokens=length, temperature=temperature, top_k=top_k,
                       stop=stop, decode=decode, generator=g)
    finally:
        model.train(was_training)
    head = decode(prompt)
    return [head + t for t in gen.texts or []]
