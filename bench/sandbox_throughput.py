"""Sandbox throughput: programs/s for small function tasks, against a new interpreter per program.

Each program is a small function (the kind of the RLEF task family) called on 5 inputs. The pool
(trainwell/sandbox: pre-forked sealed zygotes, two forks per program, full isolation) is timed with
1 worker and with one per core; the baseline starts a fresh `python -I -S` per program (no isolation
at all, the cheapest way to get a new process per program), on as many threads as there are cores.
The ratio is printed. Goal (issue 14): >= 150 programs/s on the 2-core machine.

    python bench/sandbox_throughput.py [--programs 600]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainwell.sandbox.judge import judge_calls  # noqa: E402
from trainwell.sandbox.pool import Sandbox, calls_job  # noqa: E402

INPUTS = [[3], [7], [10], [0], [25]]
BASELINE = """
import json, sys
job = json.loads(sys.stdin.read())
ns = {}
exec(compile(job["program"], "<candidate>", "exec"), ns)
print(json.dumps([ns["f"](*a) for a in job["inputs"]]))
"""


def programs(n: int) -> list[tuple[str, list[int]]]:
    out = []
    for i in range(n):
        k = i % 7
        src = f"def f(x):\n    total = {k}\n    for i in range(x):\n        total += i * {k + 1}\n    return total\n"
        out.append((src, [k + sum(j * (k + 1) for j in range(a[0])) for a in INPUTS]))
    return out


def pool_rate(progs, workers: int) -> tuple[float, int]:
    with Sandbox(workers=workers) as box:
        box.map([calls_job(p, "f", INPUTS) for p, _ in progs[:20]])  # warm
        t0 = time.perf_counter()
        replies = box.map([calls_job(p, "f", INPUTS) for p, _ in progs])
        wall = time.perf_counter() - t0
    good = sum(judge_calls(r, want).passed for r, (_, want) in zip(replies, progs))
    return len(progs) / wall, good


def baseline_rate(progs, workers: int) -> tuple[float, int]:
    def one(item) -> bool:
        p, want = item
        out = subprocess.run([sys.executable, "-I", "-S", "-c", BASELINE], input=json.dumps({"program": p, "inputs": INPUTS}),
                             capture_output=True, text=True, env={}, timeout=30)
        return out.returncode == 0 and json.loads(out.stdout) == want

    with ThreadPoolExecutor(workers) as ex:
        list(ex.map(one, progs[:10]))
        t0 = time.perf_counter()
        ok = list(ex.map(one, progs))
        wall = time.perf_counter() - t0
    return len(progs) / wall, sum(ok)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--programs", type=int, default=600)
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    progs = programs(args.programs)
    print(f"{args.programs} programs, {len(INPUTS)} calls each, {cores} cores ({os.uname().machine})")
    one, ok1 = pool_rate(progs, 1)
    print(f"sandbox, 1 worker:            {one:7.1f} programs/s  ({1000 / one:.2f} ms each), {ok1} passed")
    full, okn = pool_rate(progs, cores)
    print(f"sandbox, {cores} workers:            {full:7.1f} programs/s, {okn} passed")
    over, _ = pool_rate(progs, 2 * cores)  # namespace teardown waits partly off the CPU: more workers may help
    print(f"sandbox, {2 * cores} workers:            {over:7.1f} programs/s")
    base, okb = baseline_rate(progs, cores)
    print(f"new interpreter per program: {base:7.1f} programs/s  ({1000 * cores / base:.2f} ms each), {okb} passed")
    print(f"ratio sandbox/baseline ({cores} workers each): {full / base:.2f}x   goal >= 150 programs/s: "
          f"{'met' if full >= 150 else 'NOT met'}")


if __name__ == "__main__":
    main()
