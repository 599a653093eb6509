"""Issue 6: data-parallel training on this machine — memory per rank, throughput, communication.

Three measurements, all on the default recipe's GPT (bf16 autocast as in the recipe unless
--fp32), every number a ratio against a baseline measured in the same run:

  memory      per-rank bytes of parameters + gradients + optimizer state after one step,
              FSDP2 with 2 ranks vs DDP with 2 ranks (expected close to 1/2: FSDP shards all
              three; DDP replicates them). Counted from the tensors themselves (local shards).
  throughput  tokens/s of `trainwell train --nproc 2` (DDP, and FSDP) vs one process using both
              cores (threads=2) and one process with one thread; 2 processes get 1 thread each.
  comm share  share of a DDP step spent on gradient communication: 1 - t(no_sync) / t(sync),
              the same step with and without the all-reduce, alternated, 2 ranks.

    python bench/distributed.py [--steps 60] [--fp32]

Timings need a quiet machine; memory is exact regardless of load.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import env_note, read_jsonl, steady_step_seconds  # noqa: E402

FIRST = 10


# --------------------------------------------------------------------------- worker (under torchrun)


def tensor_bytes(t) -> int:
    local = t.to_local() if hasattr(t, "to_local") else t
    return local.numel() * local.element_size()


def worker(strategy: str, steps: int, precision: str, out: Path) -> None:
    import torch

    from trainwell.config import load_config
    from trainwell.distributed.parallel import grad_sync, parallelize
    from trainwell.distributed.world import setup, teardown
    from trainwell.engine.optim import build_optimizer
    from trainwell.engine.precision import Precision
    from trainwell.models.registry import build_model

    cfg = load_config("default", [f"distributed.strategy={strategy!r}", f"train.precision={precision!r}"])
    world = setup(cfg)
    torch.manual_seed(0)
    vocab, T, B = 100, cfg.data.context, cfg.train.batch_size // world.size  # the recipe's global batch
    model = build_model(cfg.model, vocab_size=vocab, context=T)
    step_model = parallelize(model, cfg, world, precision)
    opt = build_optimizer(model, cfg.optim, torch.device("cpu"))
    prec = Precision(precision, torch.device("cpu"))
    x = torch.randint(vocab, (B, T + 1))

    def step(sync: bool) -> float:
        t0 = time.perf_counter()
        with grad_sync(step_model, world, last=sync), prec.autocast():
            logits = step_model(x[:, :-1])
            loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, vocab), x[:, 1:].reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=False)  # keep gradients allocated: they count as step memory
        return time.perf_counter() - t0

    step(True)
    params = sum(tensor_bytes(p) for p in model.parameters())
    grads = sum(tensor_bytes(p.grad) for p in model.parameters() if p.grad is not None)
    state = sum(tensor_bytes(v) for s in opt.state.values() for v in s.values() if torch.is_tensor(v))
    result = {"params": params, "grads": grads, "optimizer": state, "total": params + grads + state}
    if strategy == "ddp":
        sync_t, nosync_t = [], []
        for i in range(steps):
            (sync_t if i % 2 == 0 else nosync_t).append(step(i % 2 == 0))
        result |= {"sync_s": statistics.median(sync_t), "nosync_s": statistics.median(nosync_t)}
    if world.rank == 0:
        out.write_text(json.dumps(result))
    teardown(world)


def run_worker(strategy: str, steps: int, precision: str) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2",
               __file__, "--worker", strategy, "--steps", str(steps), "--precision", precision, "--out", str(out)]
        done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        if done.returncode != 0:
            sys.exit(f"worker failed:\n{done.stderr[-3000:]}")
        return json.loads(out.read_text())


# --------------------------------------------------------------------------- throughput (real runs)


def train_tokens_per_s(tmp: Path, tag: str, steps: int, precision: str, *extra: str) -> float:
    run = tmp / tag
    sets = [f"train.steps={steps}", "eval.every=0", "eval.samples=0", "log.plots=false", "log.progress=off",
            "log.tensorboard=false", "checkpoint.every=100000", f"train.precision={precision!r}"]
    cmd = [sys.executable, "-m", "trainwell", "train", "default", "--run-dir", str(run),
           *[a for s in sets for a in ("--set", s)], *extra]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"{tag} failed:\n{done.stderr[-3000:]}")
    records = read_jsonl(run / "metrics.jsonl")
    tokens_per_step = 32 * 128  # the recipe's global batch x context
    return tokens_per_step / steady_step_seconds(records, FIRST, steps)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--fp32", action="store_true", help="fp32 instead of the recipe's bf16")
    ap.add_argument("--worker")
    ap.add_argument("--precision", default="bf16")
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.steps, a.precision, a.out)
    precision = "fp32" if a.fp32 else "bf16"
    print(f"# {env_note()}, precision {precision}, steps {a.steps}")

    ddp, fsdp = run_worker("ddp", a.steps, precision), run_worker("fsdp", 2, precision)
    print("\n## memory per rank after one step (bytes), 2 ranks")
    print(f"{'':<10} {'params':>10} {'grads':>10} {'optimizer':>10} {'total':>10}")
    for name, r in (("DDP", ddp), ("FSDP2", fsdp)):
        print(f"{name:<10} {r['params']:>10} {r['grads']:>10} {r['optimizer']:>10} {r['total']:>10}")
    print(f"FSDP2 / DDP total: {fsdp['total'] / ddp['total']:.3f}")

    share = 1 - ddp["nosync_s"] / ddp["sync_s"]
    print(f"\n## communication share of a DDP step (2 ranks, 1 thread each)\n"
          f"step with all-reduce {ddp['sync_s'] * 1e3:.1f} ms, without {ddp['nosync_s'] * 1e3:.1f} ms: "
          f"share {share:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        t = Path(tmp)
        one2 = train_tokens_per_s(t, "one-2threads", a.steps, precision, "--set", "train.threads=2")
        one1 = train_tokens_per_s(t, "one-1thread", a.steps, precision, "--set", "train.threads=1")
        two = train_tokens_per_s(t, "ddp-2procs", a.steps, precision, "--nproc", "2")
        two_f = train_tokens_per_s(t, "fsdp-2procs", a.steps, precision, "--nproc", "2",
                                   "--set", "distributed.strategy='fsdp'")
    print("\n## throughput, default recipe (tokens/s, steady state)")
    for name, v in (("1 process, 2 threads", one2), ("1 process, 1 thread", one1),
                    ("2 processes DDP, 1 thread each", two), ("2 processes FSDP2, 1 thread each", two_f)):
        print(f"{name:<34} {v:>9.0f}   ratio to 1 process x 2 threads {v / one2:.3f}")


if __name__ == "__main__":
    main()
