"""Shared cores: training throughput alone and while a second trainwell run competes for the CPU,
under several OpenMP/thread settings, in this one invocation.

For each setting: (1) `trainwell train RECIPE` for --steps steps alone; (2) the same while a
competitor (the same recipe, same setting, started first and killed afterwards) trains. Both
sides use every core (torch's default thread count) unless the setting says otherwise. With
two equal processes on the cores, "in proportion" is each getting about half of its alone
throughput (ratio ~0.5); a collapse is far below that. The competitor's own throughput during
the measured run is shown too (both should degrade alike, neither should starve).

Settings:
  libgomp default       GOMP_SPINCOUNT=300000 (what torch does without trainwell's default)
  trainwell default     nothing set: trainwell/threads.py applies its default
  OMP_WAIT_POLICY=PASSIVE   threads sleep as soon as they wait
  1 thread              train.threads=1 (no OpenMP waiting at all, half the cores alone)
  GOMP_SPINCOUNT=N      other spin counts (3000, 10000, 30000), with --only

    python bench/shared_cores.py [--recipe default] [--steps 60]

Timings are only meaningful on an otherwise quiet machine (the point is to add one known
competitor); the load average at the start is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, read_jsonl, trainwell_cmd  # noqa: E402

SETTINGS = {
    "libgomp default": ({"GOMP_SPINCOUNT": "300000"}, []),
    "trainwell default": ({}, []),
    "OMP_WAIT_POLICY=PASSIVE": ({"OMP_WAIT_POLICY": "PASSIVE"}, []),
    "1 thread": ({}, ["train.threads=1"]),
    **{f"GOMP_SPINCOUNT={n}": ({"GOMP_SPINCOUNT": str(n)}, []) for n in (3000, 10000, 30000)},
}
DEFAULT_RUN = ["libgomp default", "trainwell default", "OMP_WAIT_POLICY=PASSIVE", "1 thread"]


def env_for(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "OMP_NUM_THREADS")}
    return {**env, **extra}


def train_args(recipe: str, run: Path, steps: int, sets: list[str]) -> list[str]:
    base = [f"train.steps={steps}", "eval.every=0", "eval.batches=1", "eval.samples=0", "checkpoint.every=1000000",
            "log.every=5", "log.tensorboard=false", "log.plots=false", "log.progress='lines'", *sets]
    if recipe == "shakespeare_char":
        base.insert(0, f"data.path={SHAKESPEARE}")
    return trainwell_cmd("train", recipe, "--run-dir", str(run), *[a for s in base for a in ("--set", s)])


def rate(run: Path) -> float:
    return json.loads((run / "summary.json").read_text())["tokens_per_s"]


def measured(recipe: str, run: Path, steps: int, sets: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    t0 = time.time()
    out = subprocess.run(train_args(recipe, run, steps, sets), capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"trainwell failed:\n{out.stderr[-2000:]}")
    return rate(run), t0, time.time()


def competitor_rate(run: Path, t0: float, t1: float) -> float:
    """Mean logged tokens/s of the competitor over the windows that ended inside [t0, t1]."""
    rows = [r for r in read_jsonl(run / "metrics.jsonl") if "train/tokens_per_s" in r and t0 < r["time"] <= t1]
    return sum(r["train/tokens_per_s"] for r in rows) / len(rows) if rows else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipe", default="default")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--only", nargs="*", default=DEFAULT_RUN, choices=list(SETTINGS),
                    help="settings to run (names above)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-shared-"))
    print(f"{os.cpu_count()} cpus, load average at start {os.getloadavg()[0]:.2f}; recipe {args.recipe}, "
          f"{args.steps} measured steps per run")
    results = []
    for name in args.only:
        extra, sets = SETTINGS[name]
        env = env_for(extra)
        alone, _, _ = measured(args.recipe, tmp / f"{len(results)}-alone", args.steps, sets, env)
        comp_dir = tmp / f"{len(results)}-competitor"
        comp = subprocess.Popen(train_args(args.recipe, comp_dir, 1_000_000, sets), env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.time() + 300
            while not (comp_dir / "metrics.jsonl").exists() or not read_jsonl(comp_dir / "metrics.jsonl"):
                if comp.poll() is not None or time.time() > deadline:
                    sys.exit("the competitor run did not start training")
                time.sleep(0.2)
            shared, t0, t1 = measured(args.recipe, tmp / f"{len(results)}-shared", args.steps, sets, env)
            other = competitor_rate(comp_dir, t0, t1)
        finally:
            comp.send_signal(signal.SIGKILL)
            comp.wait()
        results.append((name, alone, shared, other))
        print(f"{name:<26} alone {alone / 1000:6.1f}k tok/s   shared {shared / 1000:6.1f}k tok/s "
              f"(competitor {other / 1000:5.1f}k)   shared/alone {shared / alone:.2f}", flush=True)
    print("\nshared/alone ~0.5 = in proportion (two equal processes on the cores); far below = collapse")
    base = next((r for r in results if r[0] == "libgomp default"), None)
    ours = next((r for r in results if r[0] == "trainwell default"), None)
    if base and ours:
        print(f"trainwell default vs libgomp default: alone {ours[1] / base[1]:.2f}x, shared {ours[2] / base[2]:.2f}x")


if __name__ == "__main__":
    main()
