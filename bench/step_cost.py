"""Per-step cost of recipe variants, measured side by side in one process: the other half of tuning.

Each arm is a recipe plus ``--set`` overrides, built with trainwell's own job, optimizer and
precision choice; a step is exactly the loop's (forward under autocast, backward, clip, optimizer
step, zero_grad). Arms are timed in interleaved blocks of --block steps (A B C A B C ...), so a
burst of load from other processes lands on every arm alike; the median block counts.

    python bench/step_cost.py shakespeare_char --arm base= --arm "muon=optim.name='muon'" \\
        --arm "muon fp32=optim.name='muon',optim.muon_ns_dtype='fp32',train.precision='fp32'"

An arm is NAME=SET1,SET2,... (as in bench/tokens_to_target.py). Prints ms/step, tokens/s and the
ratio to the first arm, by wall time and by this process's CPU time. On a machine other
processes load, the CPU time of a one-thread run (``--threads 1``) is the steadier measure of a
step's work: a descheduled process accrues no CPU time.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trainwell  # noqa: E402,F401  (first: its OpenMP defaults must be set before torch loads)
from common import SHAKESPEARE  # noqa: E402
from tokens_to_target import split_sets  # noqa: E402


def build(recipe: str, sets: list[str], default_threads: int):
    import torch

    from trainwell.config import load_config
    from trainwell.engine.job import to_device
    from trainwell.engine.optim import build_optimizer
    from trainwell.engine.precision import Precision, choose_precision
    from trainwell.engine.state import seed_everything
    from trainwell.paradigms import build_job

    if recipe == "shakespeare_char":
        sets = [f"data.path={SHAKESPEARE}", *sets]
    cfg = load_config(recipe, sets)
    threads = cfg.train.threads or default_threads  # set again before every block: arms may differ
    torch.set_num_threads(threads)
    seed_everything(cfg.train.seed)
    device = torch.device("cpu")
    job = build_job(cfg, device)
    opt = build_optimizer(job.model, cfg.optim, device)
    prec = Precision(choose_precision(cfg, job.model, device)[0], device)
    clip = cfg.optim.grad_clip

    def steps(n: int) -> int:
        torch.set_num_threads(threads)
        tokens = 0
        for _ in range(n):
            batch = to_device(next(job.source), device)
            with prec.autocast():
                out = job.objective(job.model, batch)
            prec.backward(out.loss)
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(job.model.parameters(), clip)
            prec.step(opt)
            opt.zero_grad(set_to_none=True)
            tokens += out.units
        return tokens

    return steps, prec.name


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe")
    ap.add_argument("--arm", action="append", required=True)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = the recipe's / torch's default)")
    args = ap.parse_args()
    import os

    import torch

    arms = [(a.split("=", 1)[0], split_sets(a.split("=", 1)[1] if "=" in a else "")) for a in args.arm]
    if args.threads:
        arms = [(name, [*sets, f"train.threads={args.threads}"]) for name, sets in arms]
    default_threads = torch.get_num_threads()
    built = [(name, *build(args.recipe, sets, default_threads)) for name, sets in arms]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.2f}")
    for _, fn, _ in built:
        fn(3)  # warm-up
    wall: dict[str, list[float]] = {name: [] for name, _, _ in built}
    cpu: dict[str, list[float]] = {name: [] for name, _, _ in built}
    tokens: dict[str, int] = {}
    for _ in range(args.rounds):
        for name, fn, _ in built:
            t0, c0 = time.perf_counter(), time.process_time()
            tokens[name] = fn(args.block)
            wall[name].append((time.perf_counter() - t0) / args.block)
            cpu[name].append((time.process_time() - c0) / args.block)
    ref = built[0][0]
    ref_wall, ref_cpu = statistics.median(wall[ref]), statistics.median(cpu[ref])
    print(f"{'arm':<16} {'prec':>4}  {'wall ms/step':>12} {'tok/s':>7} {'vs ' + ref:>14}   {'cpu ms/step':>11} "
          f"{'vs ' + ref:>14}")
    for name, _, prec in built:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<16} {prec:>4}  {1000 * w:12.1f} {tokens[name] / args.block / w / 1000:6.1f}k "
              f"{w / ref_wall:14.2f}   {1000 * c:11.1f} {c / ref_cpu:14.2f}")


if __name__ == "__main__":
    main()
