"""Generation speed: trainwell's KV-cache sampler vs the same sampler without the cache, and vs
Hugging Face ``generate`` on a GPT-2 of the same size, same batch, in this one invocation.

The model is the default recipe's size (4 layers x 128, 4 heads, learned positions, context 128,
vocabulary 100) with random weights; HF's ``GPT2LMHeadModel`` is built from a ``GPT2Config`` of
that size (nothing downloaded). Both have biases, so both hold the same parameter count. Prompts
have mixed lengths (8..40 tokens, left-padded with an attention mask for HF); every row generates
exactly ``--new`` tokens (no EOS), sampled at temperature 0.8. Reports new tokens per second
(rows x new tokens / wall seconds of the whole call) as the best of ``--reps`` (2 without the cache).
The cached sampler and HF alternate for ``--rounds`` rounds (a shared host's speed drifts, by up to
2x within a minute on some): each side's figure is its best over all rounds, and the ratio of each
round is printed too.

Hugging Face runs in its own process with plain torch, the way its users run it: trainwell is not
imported there, so OpenMP keeps libgomp's defaults unless you set your own (trainwell lowers the spin count, which costs
HF's decoding up to ~1.8x on a 2-core Xeon). It is timed at ``--threads`` and at one thread, and
the faster of the two is the figure trainwell is compared with.

    python bench/generate.py [--batch 32] [--new 64] [--reps 5] [--threads 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

PEER = "--peer" in sys.argv  # the Hugging Face side: its own process, no trainwell
PLAIN_ENV = dict(os.environ)  # before trainwell's import sets GOMP_SPINCOUNT: the peer's environment
if not PEER:
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


def prompts_for(B: int, vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(1)
    lengths = torch.randint(8, 41, (B,), generator=g).tolist()
    return [torch.randint(1, vocab, (n,), generator=g).tolist() for n in lengths]


VOCAB, CONTEXT = 100, 128


def peer(args: argparse.Namespace) -> None:
    """Time HF generate on the same prompts; print one JSON line."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    hf = GPT2LMHeadModel(GPT2Config(n_layer=4, n_head=4, n_embd=128, n_positions=CONTEXT, vocab_size=VOCAB,
                                    bos_token_id=0, eos_token_id=None, pad_token_id=0)).eval()
    B, N = args.batch, args.new
    prompts = prompts_for(B, VOCAB)
    longest = max(len(p) for p in prompts)
    ids = torch.zeros(B, longest, dtype=torch.long)
    mask = torch.zeros(B, longest, dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, longest - len(p):] = torch.tensor(p)
        mask[r, longest - len(p):] = 1

    def run_hf():
        with torch.inference_mode():
            out = hf.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.8, top_k=0,
                              max_new_tokens=N, min_new_tokens=N, pad_token_id=0)
        assert out.shape == (B, longest + N)

    rows = {}
    for threads in sorted({args.threads, 1}, reverse=True):
        torch.set_num_threads(threads)
        best, med = timed(run_hf, args.reps)
        rows[threads] = {"best": best, "median": med}
    print(json.dumps({"params": sum(p.numel() for p in hf.parameters()), "rows": rows,
                      "gomp": os.environ.get("GOMP_SPINCOUNT", "libgomp default")}))


def run_peer(args: argparse.Namespace) -> dict:
    env = {k: v for k, v in PLAIN_ENV.items() if k != "OMP_NUM_THREADS"}  # an OpenMP setting of yours goes to both
    cmd = [sys.executable, __file__, "--peer", "--batch", str(args.batch), "--new", str(args.new),
           "--reps", str(args.reps), "--threads", str(args.threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"the Hugging Face process failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--new", type=int, default=64)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="alternations of trainwell and HF")
    ap.add_argument("--peer", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rounds < 1:
        ap.error("--rounds must be at least 1 (each round times both sides)")
    if args.peer:
        return peer(args)
    torch.set_num_threads(args.threads)
    from trainwell.config.schema import GPTConfig
    from trainwell.engine.generate import generate
    from trainwell.models.gpt import GPT
    from trainwell.threads import applied

    B, N = args.batch, args.new
    torch.manual_seed(0)
    ours = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, context=CONTEXT, bias=True), VOCAB).eval()
    prompts = prompts_for(B, VOCAB)
    chosen = []

    def run_ours(use_cache: bool):
        def f():
            out = generate(ours, prompts, max_new_tokens=N, temperature=0.8, use_cache=use_cache,
                           generator=torch.Generator().manual_seed(0))
            assert all(len(x) == N for x in out.ids)
            chosen.append(out.threads)
        return f

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} cpus; load average {os.getloadavg()[0]:.2f}")
    lengths = [len(p) for p in prompts]
    print(f"batch {B} prompts of {min(lengths)}..{max(lengths)} tokens, {N} new tokens each, temperature 0.8")
    rows: dict[str, float] = {}

    def time_ours(name: str, fn, reps: int) -> float:
        chosen.clear()
        best, med = timed(fn, reps, warm=reps > 2)
        rows[name] = max(rows.get(name, 0.0), B * N / best)
        print(f"{name:<28} best {best * 1000:8.1f} ms  median {med * 1000:8.1f} ms  {B * N / best:9.0f} tokens/s"
              f"   (OpenMP: {applied()}; decode threads chosen: {sorted(set(chosen))})")
        return B * N / best

    # the uncached run is ~20x slower: two timed calls, no warm-up (the cached run warmed the kernels)
    time_ours("trainwell, no cache", run_ours(False), 2)
    # rounds alternate the two sides, so a machine whose speed drifts (shared hosts do, by 2x within a
    # minute) slows neither side alone; each side's figure is its best over all rounds
    per_round = []
    for k in range(args.rounds):
        print(f"round {k + 1} of {args.rounds}")
        ours_round = time_ours("trainwell, KV cache", run_ours(True), args.reps)
        hf = run_peer(args)
        hf_round = 0.0
        for threads, r in hf["rows"].items():
            rows[f"HF {threads}"] = max(rows.get(f"HF {threads}", 0.0), B * N / r["best"])
            hf_round = max(hf_round, B * N / r["best"])
            print(f"{'HF generate, ' + threads + ' thread(s)':<28} best {r['best'] * 1000:8.1f} ms  median "
                  f"{r['median'] * 1000:8.1f} ms  {B * N / r['best']:9.0f} tokens/s   (own process, OpenMP: "
                  f"{hf['gomp']})")
        per_round.append(ours_round / hf_round)
    print(f"model 4 x 128, vocab {VOCAB}, context {CONTEXT}: trainwell "
          f"{sum(p.numel() for p in ours.parameters()):,} parameters, HF GPT-2 {hf['params']:,}")
    cached, plain = rows["trainwell, KV cache"], rows["trainwell, no cache"]
    hf_best = max(v for k, v in rows.items() if k.startswith("HF "))
    print(f"\nratio cache / no cache:          {cached / plain:.2f}x")
    print(f"ratio per round:                 {', '.join(f'{r:.2f}x' for r in per_round)}")
    print(f"ratio trainwell / HF generate:   {cached / hf_best:.2f}x  (best of all rounds each, HF's faster thread "
          f"count; target >= 2)")

if __name__ == "__main__":
    main()
