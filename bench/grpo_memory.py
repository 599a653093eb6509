"""trainwell's GRPO row of bench/vs_trl.py (its GPT, beta 0.04, bf16) at several oneDNN primitive-cache
capacities: seconds per step, peak RSS, learned reward, one process each.

    python bench/grpo_memory.py [--work /tmp/vst] [--precision bf16] [CAPACITY ...]   (default: default 128 32 0)

"default" leaves ONEDNN_PRIMITIVE_CACHE_CAPACITY unset (oneDNN's 1024). In bf16 every distinct matmul
shape gets its own cached primitive, and decoding meets a new attention shape with every token.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import vs_trl  # noqa: E402  (the same data, model size, settings and measurement)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("capacities", nargs="*", default=["default", "128", "32", "0"])
    ap.add_argument("--work", default="/tmp/vst")
    ap.add_argument("--precision", choices=("fp32", "bf16"), default="bf16")
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "gpt2" / "config.json").is_file():
        vs_trl.build_assets(work)
    sets = vs_trl.ours_sets("grpo", work, args.steps, "gpt", args.precision, **{"objective.beta": 0.04})
    for capacity in args.capacities:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(vs_trl.ROOT), str(work)]), "OMP_NUM_THREADS": "2",
               "TRAINWELL_CACHE": os.environ.get("TRAINWELL_CACHE", str(work / "cache"))}
        env.pop("ONEDNN_PRIMITIVE_CACHE_CAPACITY", None)
        if capacity != "default":
            env["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] = capacity
        r = vs_trl.run(sys.executable, vs_trl.OURS_SCRIPT,
                       ["code_grpo", "2", str(work), str(args.steps), json.dumps(sets)], env)
        print(f"primitive cache {capacity:>8}: {r['s_per_step']:.3f} s/step  {r['peak_rss_mb']:6.0f} MiB  "
              f"learned {r['learned']:.3f}", flush=True)


if __name__ == "__main__":
    main()
