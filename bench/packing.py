"""Preference pairs packed into one row (trainwell/objectives/packing.py) against the two-row forward:
time per training step of DPO and of a Bradley-Terry reward model, in this one invocation.

    python bench/packing.py [--pairs 16] [--prompt 40-64] [--completion 64] [--rounds 4]

The model is trainwell's GPT of bench/vs_trl.py (4 layers x 128, 4 heads, context 128, vocab 100,
random weights); the batch is collated by trainwell's own pair collate (16 pairs, prompts of 40 to 64
random tokens, both completions 64 tokens). The plain arm is the same batch with the key that
packing reads removed (``lengths`` for DPO, ``mask`` for the reward model). Arms alternate, best
round of each reported; forward + backward + zero_grad (no optimizer step: both arms alike).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trainwell  # noqa: E402,F401  (first: its OpenMP defaults)
import torch  # noqa: E402

from trainwell.config.schema import GPTConfig  # noqa: E402
from trainwell.data.completions import pad_rows  # noqa: E402
from trainwell.models.gpt import GPT  # noqa: E402
from trainwell.models.heads import ScalarHead  # noqa: E402
from trainwell.objectives.dpo import dpo_loss  # noqa: E402
from trainwell.objectives.reward import reward_loss  # noqa: E402
from trainwell.paradigms.preferences import pairs_of  # noqa: E402

VOCAB = 100


def batch(pairs: int, lo: int, hi: int, completion: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, VOCAB, (int(n),), generator=g).tolist() for n in torch.randint(lo, hi + 1, (pairs,), generator=g)]
    sides = [pad_rows([p + torch.randint(1, VOCAB, (completion,), generator=g).tolist() for p in prompts],
                      [len(p) for p in prompts], 0) for _ in range(2)]
    return pairs_of(*sides)(torch.arange(pairs))


def per_step(model: torch.nn.Module, loss, b: dict[str, torch.Tensor], steps: int = 6) -> float:
    def step():
        loss(model, b).loss.backward()
        model.zero_grad(set_to_none=True)
    step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--prompt", default="40-64", help="prompt length range in tokens, LO-HI")
    ap.add_argument("--completion", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    lo, hi = map(int, args.prompt.split("-"))
    torch.manual_seed(0)
    gpt = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, context=128), VOCAB)
    b = batch(args.pairs, lo, hi, args.completion)
    tokens = int(b["lengths"].sum())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; {args.pairs} pairs, prompts {lo}-{hi} "
          f"tokens, completions {args.completion}: {tokens} tokens in two rows per pair, "
          f"{tokens - int(b['mask'].int().argmax(1)[:args.pairs].sum())} packed")
    dpo = lambda m, x: dpo_loss(m, x, beta=0.1)  # noqa: E731
    cases = {"DPO": (gpt, dpo, {**b, "ref_logp": torch.zeros(2 * args.pairs)}, "lengths"),
             "reward model": (ScalarHead(gpt), reward_loss, b, "mask")}
    for name, (model, loss, full, key) in cases.items():
        plain = {k: v for k, v in full.items() if k != key}
        best = {"packed": float("inf"), "two rows": float("inf")}
        for _ in range(args.rounds):
            best["two rows"] = min(best["two rows"], per_step(model, loss, plain))
            best["packed"] = min(best["packed"], per_step(model, loss, full))
        print(f"{name:<13} two rows {best['two rows'] * 1e3:7.1f} ms/step   packed {best['packed'] * 1e3:7.1f} ms/step"
              f"   packed / two rows {best['packed'] / best['two rows']:.2f}x", flush=True)


if __name__ == "__main__":
    main()
