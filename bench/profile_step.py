"""Where a training step's time goes: torch.profiler over steps of a recipe's model.

    python bench/profile_step.py [RECIPE] [--set KEY=VALUE ...]

Builds the recipe's model, batches, optimizer and precision exactly as `trainwell train` does,
runs a few warm-up steps, then profiles 10 steps and prints the operators by self CPU time.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    import torch
    from torch.profiler import ProfilerActivity, profile

    from baseline_loop import hand_loop
    from common import SHAKESPEARE
    from trainwell.config import load_config
    from trainwell.paradigms import build_job
    from trainwell.engine.optim import build_optimizer
    from trainwell.engine.precision import Precision, choose_precision

    args = sys.argv[1:]
    recipe = args.pop(0) if args and not args[0].startswith("--") else "shakespeare_char"
    sets = [args[i + 1] for i in range(len(args)) if args[i] == "--set"]
    if recipe == "shakespeare_char":
        sets = [f"data.path={SHAKESPEARE}", *sets]
    cfg = load_config(recipe, sets)
    device = torch.device("cpu")
    job = build_job(cfg, device)
    opt = build_optimizer(job.model, cfg.optim, device)
    prec = Precision(choose_precision(cfg, job.model, device)[0], device)

    def batches():
        while True:
            b = next(job.source)
            yield b["input"], b["target"]

    it = batches()
    hand_loop(job.model, opt, it, 5, lambda s: cfg.optim.lr, prec.autocast)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        hand_loop(job.model, opt, it, 10, lambda s: cfg.optim.lr, prec.autocast)
    print(f"recipe {recipe}, precision {prec.name}, batch {cfg.train.batch_size} x {cfg.data.context}")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
