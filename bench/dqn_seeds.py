"""Per-seed reliability of `trainwell train cartpole_dqn`: for each seed, the env steps at the first
greedy evaluation >= 475 (or "not solved" within data.total_env_steps), the evaluation returns
along the way, and the largest logged mean Q-value (CartPole pays 1 per step, so with gamma 0.99
a Q-value above 1 / (1 - 0.99) = 100 is overestimation, and one far above it is divergence).

Counts env steps, which do not depend on the machine's load; runs JOBS seeds at a time.

    python bench/dqn_seeds.py [--seeds 0-9] [--jobs 2] [--set data.collect_steps=256 ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import read_jsonl, timed_process, trainwell_cmd  # noqa: E402


def seed_range(text: str) -> list[int]:
    first, _, last = text.partition("-")
    return list(range(int(first), int(last or first) + 1))


def run_seed(seed: int, root: Path, sets: list[str]) -> dict:
    run = root / f"seed-{seed}"
    extra = [a for s in sets for a in ("--set", s)]
    timed_process(trainwell_cmd("train", "cartpole_dqn", "--run-dir", str(run), "--set", f"train.seed={seed}",
                                "--set", "log.progress=off", "--set", "data.video=false", "--set", "log.plots=false",
                                "--set", "log.tensorboard=false", *extra))
    rows = read_jsonl(run / "metrics.jsonl")
    summary = json.loads((run / "summary.json").read_text())
    return {"seed": seed, "solved": summary["val_return"] >= 475, "env_steps": summary["env_steps"],
            "returns": [round(r["val/return"]) for r in rows if "val/return" in r],
            "max_q": max(r["train/q_mean"] for r in rows if "train/q_mean" in r)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", default="0-9", help="a range such as 0-9, or one seed")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--set", dest="sets", action="append", default=[], help="a recipe override (repeatable)")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-dqn-"))
    print(f"cartpole_dqn {' '.join(args.sets) or '(recipe as shipped)'}; runs in {root}")
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda s: run_seed(s, root, args.sets), seed_range(args.seeds)))
    for r in results:
        state = f"solved at {r['env_steps']}" if r["solved"] else f"NOT solved in {r['env_steps']}"
        print(f"  seed {r['seed']}: {state} env steps, max q_mean {r['max_q']:.4g}; "
              f"eval returns {' '.join(map(str, r['returns']))}")
    steps = [r["env_steps"] if r["solved"] else float("inf") for r in results]
    print(f"solved {sum(r['solved'] for r in results)} of {len(results)}; median {statistics.median(steps):.0f} "
          f"env steps (an unsolved seed counts as infinitely slow), max {max(steps):.0f}")


if __name__ == "__main__":
    main()
