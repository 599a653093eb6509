"""Issue 5: the PPO macro placer against random and greedy placement on held-out netlists.

    python bench/placement.py [--seeds 3] [--netlists 1000] [--set KEY=VALUE ...]

Each seed is a whole `trainwell train placement_ppo --set train.seed=S` process; the numbers come
from its summary.json: mean HPWL of the deterministic policy, of random placement and of the greedy
placer on the same held-out netlists (ids 2^31 + k, never drawn in training), and the ratios of
the means. Quality numbers, so machine load does not change them (the wall time it prints does).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import env_note, timed_process, trainwell_cmd  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--netlists", type=int, default=1000, help="held-out netlists scored at the end")
    ap.add_argument("--set", action="append", default=[], help="extra recipe overrides")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-placement-"))
    print(env_note())
    rows = []
    for seed in range(args.seeds):
        run_dir = tmp / f"seed-{seed}"
        sets = ["log.progress=off", f"train.seed={seed}", f"data.eval_episodes={args.netlists}",
                "eval.every=0", *args.set]  # evaluate once, at the end, on all the netlists
        wall, _ = timed_process(trainwell_cmd("train", "placement_ppo", "--run-dir", str(run_dir),
                                              *[a for s in sets for a in ("--set", s)]))
        s = json.loads((run_dir / "summary.json").read_text())
        rows.append(s)
        print(f"seed {seed}: HPWL agent {s['heldout_hpwl']:.2f}  random {s['heldout_hpwl_random']:.2f}  "
              f"greedy {s['heldout_hpwl_greedy']:.2f}  agent/random {s['heldout_vs_random']:.3f}  "
              f"agent/greedy {s['heldout_vs_greedy']:.3f}  stuck {s['heldout_stuck']:.3f}  "
              f"({s['env_steps']} env steps, {s['train_seconds']:.0f} s training, {wall:.0f} s wall)  "
              f"{run_dir / 'placement.png'}")
    for key, name in (("heldout_vs_random", "agent/random"), ("heldout_vs_greedy", "agent/greedy")):
        vals = [r[key] for r in rows]
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        print(f"{name:13s} HPWL ratio over {args.seeds} seeds: {statistics.mean(vals):.3f} ± {sd:.3f} "
              f"(min {min(vals):.3f}, max {max(vals):.3f}; < 1 = the agent's wires are shorter)")


if __name__ == "__main__":
    main()
