"""Issue 4: every paradigm's recipe at full size, 3 seeds, against its same-run baseline.

    python bench/paradigms.py [--recipes digits_cnn,diabetes_mlp,...] [--seeds 3]

Each run is a whole `trainwell train RECIPE --set train.seed=S` process; the numbers come from
its summary.json (the recipe's own evaluation and its baseline trained in the same run).
diabetes_mlp and digits_cnn are also run over 5 different train/test splits (data.split_seed):
with 89 (360) test rows the split moves the score more than the seed does.
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

# recipe -> (metric, baseline metric, which way is better, target description)
RECIPES = {
    "digits_cnn": ("test_accuracy", "baseline_svc_accuracy", "higher", "mean test accuracy > SVC's (aim 0.99)"),
    "diabetes_mlp": ("val_r2", "baseline_linear_r2", "higher", "R² >= LinearRegression's"),
    "digits_cluster": ("test_ari", "baseline_kmeans_ari", "higher", "ARI >= 0.80 (k-means on pixels ~0.67)"),
    "digits_density": ("test_bits_per_dim", "baseline_gmm_bits_per_dim", "lower", "test NLL below the best GMM"),
    "code_mlm": ("val_accuracy", "unigram_val_accuracy", "higher", "masked accuracy >= 2x unigram"),
}


def run(recipe: str, tmp: Path, *sets: str) -> tuple[float, dict]:
    run_dir = tmp / f"{recipe}-{len(list(tmp.iterdir()))}"
    args = ["train", recipe, "--run-dir", str(run_dir), "--set", "log.progress=off"]
    for s in sets:
        args += ["--set", s]
    wall, _ = timed_process(trainwell_cmd(*args))
    return wall, json.loads((run_dir / "summary.json").read_text())


def describe(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {sd:.4f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--recipes", default=",".join(RECIPES))
    ap.add_argument("--skip-splits", action="store_true")
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-paradigms-"))
    print(env_note())
    for recipe in args.recipes.split(","):
        metric, base_key, better, target = RECIPES[recipe]
        walls, vals, bases = [], [], []
        for seed in range(args.seeds):
            wall, s = run(recipe, tmp, f"train.seed={seed}")
            walls.append(wall)
            vals.append(s[metric])
            bases.append(s[base_key])
            print(f"  {recipe} seed {seed}: {metric} {s[metric]:.4f} | {base_key} {s[base_key]:.4f} | {wall:.1f} s",
                  flush=True)
        print(f"{recipe}: {metric} {describe(vals)} (mean ± sd over {len(vals)} seeds) vs {base_key} "
              f"{describe(bases)}; wall {statistics.mean(walls):.1f} s; target: {target}", flush=True)
        if recipe in ("diabetes_mlp", "digits_cnn") and not args.skip_splits:
            rows = [run(recipe, tmp, f"data.split_seed={k}")[1] for k in range(5)]
            v, b = [r[metric] for r in rows], [r[base_key] for r in rows]
            print(f"  over 5 splits: {metric} {describe(v)} vs {base_key} {describe(b)}; "
                  f"per split: " + ", ".join(f"{x:.3f}/{y:.3f}" for x, y in zip(v, b)), flush=True)


if __name__ == "__main__":
    main()
