"""Generation speed: trainwell's KV-cache sampler vs the same sampler without the cache, and vs
Hugging Face ``generate`` on a GPT-2 of the same size, same batch, in this one invocation.

The model is the default recipe's size (4 layers x 128, 4 heads, learned positions, context 128,
vocabulary 100) with random weights; HF's ``GPT2LMHeadModel`` is built from a ``GPT2Config`` of
that size (nothing downloaded). Both have biases, so both hold the same parameter count. Prompts
have mixed lengths (8..40 tokens, left-padded with an attention mask for HF); every row generates
exactly ``--new`` tokens (no EOS), sampled at temperature 0.8. Reports new tokens per second
(rows x new tokens / wall seconds of the whole call) as the best of ``--reps`` (2 without the cache).

    python bench/generate.py [--batch 32] [--new 64] [--reps 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import trainwell  # noqa: F401  (first: its OpenMP defaults must be set before torch loads)
import torch


def timed(fn, reps: int, warm: bool = True) -> tuple[float, float]:
    if warm:
        fn()  # warm-up: allocator, kernels, HF's lazy set-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from transformers import GPT2Config, GPT2LMHeadModel

    from trainwell.config.schema import GPTConfig
    from trainwell.engine.generate import generate
    from trainwell.models.gpt import GPT

    vocab, context, B, N = 100, 128, args.batch, args.new
    torch.manual_seed(0)
    ours = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, context=context, bias=True), vocab).eval()
    hf = GPT2LMHeadModel(GPT2Config(n_layer=4, n_head=4, n_embd=128, n_positions=context, vocab_size=vocab,
                                    bos_token_id=0, eos_token_id=None, pad_token_id=0)).eval()
    n_ours = sum(p.numel() for p in ours.parameters())
    n_hf = sum(p.numel() for p in hf.parameters())
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(8, 41, (B,), generator=g).tolist()
    prompts = [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths]
    longest = max(lengths)
    ids = torch.zeros(B, longest, dtype=torch.long)
    mask = torch.zeros(B, longest, dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, longest - len(p):] = torch.tensor(p)
        mask[r, longest - len(p):] = 1

    def run_ours(use_cache: bool):
        def f():
            out = generate(ours, prompts, max_new_tokens=N, temperature=0.8, use_cache=use_cache,
                           generator=torch.Generator().manual_seed(0))
            assert all(len(x) == N for x in out.ids)
        return f

    def run_hf():
        with torch.inference_mode():
            out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.8, top_k=0,
                              max_new_tokens=N, min_new_tokens=N, pad_token_id=0)
        assert out.shape == (B, longest + N)

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cpus; load average {os.getloadavg()[0]:.2f}")
    print(f"model 4 x 128, vocab {vocab}, context {context}: trainwell {n_ours:,} parameters, HF GPT-2 {n_hf:,}")
    print(f"batch {B} prompts of {min(lengths)}..{longest} tokens, {N} new tokens each, temperature 0.8")
    rows = {}
    # the uncached run is ~20x slower: two timed calls, no warm-up (the cached run warmed the kernels)
    for name, fn, reps in [("trainwell, KV cache", run_ours(True), args.reps),
                           ("trainwell, no cache", run_ours(False), 2),
                           ("HF generate (its cache)", run_hf, args.reps)]:
        best, med = timed(fn, reps, warm=reps > 2)
        rows[name] = B * N / best
        print(f"{name:<26} best {best * 1000:8.1f} ms  median {med * 1000:8.1f} ms  {B * N / best:9.0f} tokens/s")
    cached, plain, hf_rate = rows["trainwell, KV cache"], rows["trainwell, no cache"], rows["HF generate (its cache)"]
    print(f"\nratio cache / no cache:          {cached / plain:.2f}x")
    print(f"ratio trainwell / HF generate:   {cached / hf_rate:.2f}x  (target >= 2)")


if __name__ == "__main__":
    main()
