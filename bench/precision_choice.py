"""What `train.precision` resolves to for each shipped recipe on this machine ("auto": and why).

For every recipe that builds without extra inputs (no pretrained checkpoint, no Hugging Face folder)
this builds the recipe's model and runs the real probe (engine/precision.py: the model's own
linear-layer shapes, fp32 vs bf16 on one thread) with a fresh cache, so nothing is reused from
earlier runs. Prints the decision, bf16's measured speed relative to fp32 and the probe's time.

    python bench/precision_choice.py                 # this CPU as it is
    python bench/precision_choice.py --emulate-avx2  # the same with oneDNN/ATen/MKL capped at AVX2:
                                                     # an AVX2-only CPU (no AVX-512, no AMX) emulated

A decision is a ratio of two timings taken side by side (interleaved, best of several), so it is
far less disturbed by other processes than a wall time; still, rerun it on a quiet machine for the
ratios themselves.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import trainwell  # noqa: E402,F401  (first: its OpenMP defaults must be set before torch loads)
from common import SHAKESPEARE  # noqa: E402

RECIPES = ["default", "shakespeare_char", "code_mlm", "digits_cnn", "diabetes_mlp", "digits_cluster",
           "digits_density", "cartpole_ppo", "cartpole_dqn", "placement_ppo"]
AVX2 = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--emulate-avx2", action="store_true")
    ap.add_argument("--recipes", nargs="*", default=RECIPES)
    args = ap.parse_args()
    if args.emulate_avx2 and os.environ.get("ONEDNN_MAX_CPU_ISA") != "AVX2":  # the caps apply at torch load
        argv = [sys.executable, __file__, "--emulate-avx2", "--recipes", *args.recipes]
        sys.exit(subprocess.run(argv, env={**os.environ, **AVX2}).returncode)
    os.environ["TRAINWELL_CACHE"] = tempfile.mkdtemp(prefix="bench-precision-")  # token cache too: cold
    import torch

    from trainwell.config import load_config
    from trainwell.engine.machine import cpu_features
    from trainwell.engine.precision import choose_precision
    from trainwell.paradigms import build_job

    cpu = torch.device("cpu")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU capability "
          f"{torch.backends.cpu.get_cpu_capability()}, flags {cpu_features()}, load average {os.getloadavg()[0]:.2f}"
          + ("; emulating AVX2 (" + " ".join(f"{k}={v}" for k, v in AVX2.items()) + ")" if args.emulate_avx2 else ""))
    for recipe in args.recipes:
        sets = [f"data.path={SHAKESPEARE}"] if recipe == "shakespeare_char" else []
        cfg = load_config(recipe, sets)
        job = build_job(cfg, cpu)
        t0 = time.perf_counter()
        name, reason = choose_precision(cfg, job.model, cpu)
        print(f"{recipe:<17} {name}  ({time.perf_counter() - t0:.2f} s)  {reason}", flush=True)


if __name__ == "__main__":
    main()
