"""Targets 2-4: engine overhead vs a hand-written loop, checkpoint stall, throughput and MFU.

All arms run in this one process on the default recipe's model, batches and optimizer, and
are timed the same way: wall-clock seconds per step between step FIRST and step STEPS
(everything the loop does in between counts: logging, checkpointing at its default interval,
data loading). Arms alternate so slow drift of the machine hits both sides.

  baseline       bench/baseline_loop.hand_loop: forward, loss, backward, clip, step. Nothing else.
  trainwell      trainwell.train with the recipe's logging (every 10) and checkpoint (every 200)
  no-checkpoint  trainwell with checkpoint.every beyond the run (only the final save, after timing)
  async          trainwell with checkpoint.async_save = true

    python bench/engine_overhead.py [--steps 300] [--reps 2]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import env_note, read_jsonl, steady_step_seconds  # noqa: E402

FIRST = 20


def trainwell_arm(steps: int, tmp: Path, tag: str, *extra: str) -> tuple[float, dict]:
    import trainwell

    sets = [f"train.steps={steps}", "eval.every=0", "eval.samples=0", "log.plots=false",
            "log.progress=off", *extra]
    res = trainwell.train("default", sets, run_dir=tmp / f"{tag}-{time.monotonic_ns()}")
    records = read_jsonl(res.run_dir / "metrics.jsonl")
    mfu = [r["train/mfu"] for r in records if "train/mfu" in r and r["step"] > FIRST]
    tps = [r["train/tokens_per_s"] for r in records if "train/tokens_per_s" in r and r["step"] > FIRST]
    return steady_step_seconds(records, FIRST, steps), {"mfu": statistics.mean(mfu), "tok_s": statistics.mean(tps)}


def baseline_arm(steps: int) -> float:
    import torch

    from baseline_loop import hand_loop
    from trainwell.config import load_config
    from trainwell.paradigms import build_job
    from trainwell.engine.trainer import seed_everything
    from trainwell.engine.optim import build_optimizer, lr_factor
    from trainwell.engine.precision import Precision, choose_precision

    cfg = load_config("default", [f"train.steps={steps}"])
    seed_everything(cfg.train.seed)
    device = torch.device("cpu")
    job = build_job(cfg, device)  # same model init, same batches (same seed) as the trainwell arm
    opt = build_optimizer(job.model, cfg.optim, device)
    prec = Precision(choose_precision(cfg, job.model, device)[0], device)
    source = job.source

    def batches():
        while True:
            b = next(source)
            yield b["input"], b["target"]

    stamps: dict[int, float] = {}

    def on_step(step: int, loss) -> None:
        if step in (FIRST, steps):
            stamps[step] = time.time()

    hand_loop(job.model, opt, batches(), steps, lambda s: cfg.optim.lr * lr_factor(s, steps, cfg.schedule),
              prec.autocast, clip=cfg.optim.grad_clip, on_step=on_step)
    return (stamps[steps] - stamps[FIRST]) / (steps - FIRST)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-overhead-"))
    print(env_note())
    base, tw, nockpt, asyn, info = [], [], [], [], []
    for rep in range(args.reps):
        base.append(baseline_arm(args.steps))
        t, i = trainwell_arm(args.steps, tmp, "tw")
        tw.append(t)
        info.append(i)
        t, _ = trainwell_arm(args.steps, tmp, "nockpt", f"checkpoint.every={10 * args.steps}")
        nockpt.append(t)
        t, _ = trainwell_arm(args.steps, tmp, "async", "checkpoint.async_save=true")
        asyn.append(t)
        print(f"rep {rep}: ms/step baseline {base[-1] * 1e3:.1f}, trainwell {tw[-1] * 1e3:.1f}, "
              f"no-checkpoint {nockpt[-1] * 1e3:.1f}, async {asyn[-1] * 1e3:.1f}", flush=True)
    med = statistics.median
    print(f"\nengine overhead   trainwell / hand-written loop step time: {med(tw) / med(base):.3f}  (target <= 1.03)")
    print(f"checkpoint stall  trainwell / no-checkpoint step time:      {med(tw) / med(nockpt):.3f}  (target <= 1.05)")
    print(f"                  async-save / no-checkpoint step time:     {med(asyn) / med(nockpt):.3f}")
    print(f"throughput        {statistics.mean(i['tok_s'] for i in info) / 1e3:.1f}k tokens/s, "
          f"MFU {100 * statistics.mean(i['mfu'] for i in info):.1f}% of the measured bf16 matmul peak")


if __name__ == "__main__":
    main()
