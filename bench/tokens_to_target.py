"""Tokens to a target validation loss, per recipe variant: the load-independent half of tuning.

Each arm is `trainwell train RECIPE --set ...` (one thread, evaluations every --eval-every steps
with the recipe's own validation measure, no plots/samples) run as its own process; arms may run
side by side (--jobs). For each arm it prints the first evaluated step (and tokens) at which
val/loss <= --target, the final val loss, and the CPU seconds the process used per step (one
thread, so this is the step's compute cost, much less disturbed by other processes than wall
time; still, compare arms from the same invocation only).

    python bench/tokens_to_target.py shakespeare_char --target 1.886 \\
        --arm base= --arm muon="optim.name='muon'" --arm "wsd=schedule.name='wsd',schedule.min_lr_ratio=0.0"

An arm is NAME=SET1,SET2,... (``--set`` overrides separated by commas; empty = the recipe as is).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, read_jsonl, trainwell_cmd  # noqa: E402


def split_sets(text: str) -> list[str]:
    """'a=1,b=[2,3],c='x,y'' -> ['a=1', 'b=[2,3]', "c='x,y'"] (commas inside [] or quotes stay)."""
    out, cur, depth, quote = [], "", 0, ""
    for ch in text:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        elif ch == "," and depth == 0:
            out.append(cur)
            cur = ""
            continue
        cur += ch
    return [s for s in [*out, cur] if s.strip()]


def start(recipe: str, run: Path, sets: list[str], eval_every: int) -> subprocess.Popen:
    base = [f"eval.every={eval_every}", "eval.samples=0", "log.plots=false", "log.tensorboard=false",
            "checkpoint.every=1000000", "log.progress='off'", "train.threads=1"]
    if recipe == "shakespeare_char":
        base.insert(0, f"data.path={SHAKESPEARE}")
    args = trainwell_cmd("train", recipe, "--run-dir", str(run), *[a for s in [*base, *sets] for a in ("--set", s)])
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def report(name: str, run: Path, cpu_s: float, target: float) -> str:
    rows = read_jsonl(run / "metrics.jsonl")
    summary = json.loads((run / "summary.json").read_text())
    tokens_per_step = summary["tokens_seen"] / summary["steps"]
    vals = [(r["step"], r["val/loss"]) for r in rows if "val/loss" in r]
    hit = next((s for s, v in vals if v <= target), None)
    where = f"step {hit:5d} ({hit * tokens_per_step / 1e3:6.0f}k tokens)" if hit else "not reached        "
    curve = " ".join(f"{v:.3f}" for _, v in vals)
    return (f"{name:<14} <= {target}: {where}  final {vals[-1][1]:.4f} at step {vals[-1][0]}  "
            f"cpu {1000 * cpu_s / summary['steps']:.1f} ms/step  | {curve}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("recipe")
    ap.add_argument("--target", type=float, required=True)
    ap.add_argument("--arm", action="append", required=True, help="NAME=SET1,SET2,...")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-t2t-"))
    arms = [(a.split("=", 1)[0], split_sets(a.split("=", 1)[1] if "=" in a else "")) for a in args.arm]
    print(f"load average {os.getloadavg()[0]:.2f}; runs in {tmp}", flush=True)
    pending, running = list(arms), {}
    while pending or running:
        while pending and len(running) < args.jobs:
            name, sets = pending.pop(0)
            proc = start(args.recipe, tmp / name, sets, args.eval_every)
            running[proc.pid] = (name, proc)
        pid, status, usage = os.wait4(-1, 0)
        if pid not in running:
            continue
        name, proc = running.pop(pid)
        err = proc.stderr.read() if proc.stderr else ""
        if os.waitstatus_to_exitcode(status) != 0:
            print(f"{name:<14} failed: {err.strip().splitlines()[-1] if err.strip() else status}", flush=True)
            continue
        print(report(name, tmp / name, usage.ru_utime + usage.ru_stime, args.target), flush=True)


if __name__ == "__main__":
    main()
