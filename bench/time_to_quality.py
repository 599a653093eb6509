"""Time to quality on Tiny Shakespeare: nanoGPT itself vs `trainwell train shakespeare_char`.

Runs, in this one invocation and on this machine, each as a whole process timed from spawn to exit:
  nanoGPT   ../shared/peers/nanoGPT at its pinned commit, from a scratch copy (it writes next to
            itself): its own data preparation (data/shakespeare_char/prepare.py, on a copy of
            ../shared/data/tinyshakespeare.txt as input.txt, as its README says), then its README's
            CPU recipe (train.py config/train_shakespeare_char.py --device=cpu --compile=False
            --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12 --n_layer=4 --n_head=4
            --n_embd=128 --max_iters=2000 --lr_decay_iters=2000 --dropout=0.0). Its final val loss
            is the one it prints at iteration 2000 (20 random batches of 12 x 64).
  trainwell `trainwell train shakespeare_char --set data.path=...` for each seed (imports, data
            preparation, evaluation, checkpoints, sample and plots included), with a fresh cache
            folder, so the tokenized text, the precision probe and the peak probe are not reused
            from earlier runs. Val loss: the recipe's own evaluation, 640 fixed windows spread over
            the whole validation split (the same last 10 % nanoGPT holds out).
Each runs as its users run it: nanoGPT with this shell's environment (libgomp's OpenMP defaults unless
you set your own), trainwell with the defaults it applies to itself (trainwell/threads.py lowers the
spin count; that costs nanoGPT's small steps 1.27x on a 2-core Xeon, so giving it to nanoGPT too, as
this script did until 2026-12-02, flattered the ratio there). An OMP_WAIT_POLICY or GOMP_SPINCOUNT you
set goes to both. Prints the wall times, the val losses and the ratio trainwell / nanoGPT
(train.py's wall; its data preparation is shown apart and not counted).

    python bench/time_to_quality.py [--seeds 3] [--set KEY=VALUE ...]   (extra --set go to trainwell)
    python bench/time_to_quality.py --smoke    (checks the script end to end in ~1 min: nanoGPT 50
                                                iterations, trainwell 10 steps, 1 seed; its numbers mean nothing)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

PLAIN_ENV = dict(os.environ)  # before trainwell is imported here (its import sets GOMP_SPINCOUNT)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, SHARED, env_note, timed_process, trainwell_cmd  # noqa: E402

NANOGPT = SHARED / "peers" / "nanoGPT"
RECIPE = ["config/train_shakespeare_char.py", "--device=cpu", "--compile=False", "--eval_iters=20",
          "--log_interval=1", "--block_size=64", "--batch_size=12", "--n_layer=4", "--n_head=4",
          "--n_embd=128", "--dropout=0.0"]
ITERS = 2000  # --max_iters and --lr_decay_iters of the README's CPU recipe
TARGET = 0.25  # trainwell's wall time / nanoGPT's, at a val loss no worse than nanoGPT's


def run_nanogpt(tmp: Path, env: dict[str, str], iters: int = ITERS) -> tuple[float, float, float]:
    """(prepare seconds, train seconds, final val loss) of nanoGPT's README CPU recipe."""
    work = tmp / "nanoGPT"
    shutil.copytree(NANOGPT, work, ignore=shutil.ignore_patterns("out-*", "*.bin", "*.pkl", "input.txt"))
    data = work / "data" / "shakespeare_char"
    shutil.copyfile(SHAKESPEARE, data / "input.txt")
    prep_s, _ = timed_process([sys.executable, "prepare.py"], cwd=data, env=env)
    extra = [f"--max_iters={iters}", f"--lr_decay_iters={iters}"]
    if iters != ITERS:
        extra += [f"--eval_interval={iters}", f"--warmup_iters={min(100, iters // 2)}"]
    train_s, out = timed_process([sys.executable, "train.py", *RECIPE, *extra], cwd=work, env=env)
    finals = re.findall(r"step (\d+): train loss ([\d.]+), val loss ([\d.]+)", out.stdout)
    if not finals or finals[-1][0] != str(iters):
        sys.exit(f"nanoGPT did not report its loss at step {iters}:\n{out.stdout[-2000:]}")
    return prep_s, train_s, float(finals[-1][2])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], dest="sets", help="extra trainwell --set overrides")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes: checks that the script runs, nothing more")
    args = ap.parse_args()
    iters = ITERS
    if args.smoke:
        iters, args.seeds, args.sets = 50, 1, ["train.steps=10", *args.sets]
    tmp = Path(tempfile.mkdtemp(prefix="bench-ttq-"))
    env = PLAIN_ENV
    print(env_note(), f"load average {os.getloadavg()[0]:.2f}; nanoGPT's GOMP_SPINCOUNT: "
          f"{env.get('GOMP_SPINCOUNT', 'libgomp default')}")

    prep_s, nano_s, nano_val = run_nanogpt(tmp, env, iters)
    print(f"nanoGPT: prepare.py {prep_s:.1f} s, train.py {nano_s:.1f} s wall, final val loss {nano_val:.4f}")

    tw_env = {**env, "TRAINWELL_CACHE": str(tmp / "trainwell-cache")}
    rows = []
    for seed in range(1337, 1337 + args.seeds):
        run = tmp / f"tw-{seed}"
        sets = [f"data.path={SHAKESPEARE}", f"train.seed={seed}", *args.sets]
        wall, _ = timed_process(trainwell_cmd("train", "shakespeare_char", "--run-dir", str(run),
                                              *[a for s in sets for a in ("--set", s)]), env=tw_env)
        s = json.loads((run / "summary.json").read_text())
        meta = json.loads((run / "meta.json").read_text())
        rows.append((wall, s["val_loss"], s))
        print(f"trainwell seed {seed}: {wall:.1f} s wall, val {s['val_loss']:.4f}, {meta['precision']}, "
              f"first step at {s['time_to_first_step_s']:.2f} s, {s['train_seconds']:.1f} s in "
              f"{s['steps']} steps, {s['tokens_per_s'] / 1000:.1f}k tok/s")

    walls, losses = [r[0] for r in rows], [r[1] for r in rows]
    med = statistics.median(walls)
    ok = max(losses) <= nano_val
    print(f"\ntrainwell: median wall {med:.1f} s (min {min(walls):.1f}, max {max(walls):.1f}); val loss mean "
          f"{statistics.mean(losses):.4f}, max {max(losses):.4f} ({'all' if ok else 'NOT all'} <= nanoGPT's "
          f"{nano_val:.4f})")
    print(f"ratio trainwell / nanoGPT wall (same invocation): {med / nano_s:.3f}  (target <= {TARGET})")
    for (wall, _, s), seed in zip(rows, range(1337, 1337 + len(rows))):
        # time_to_first_step_s ends after the first step, which train_seconds counts too
        setup = s["time_to_first_step_s"] - s["train_seconds"] / max(1, s["steps"])
        other = s["wall_seconds"] - s["train_seconds"] - setup
        print(f"where the time goes (seed {seed}): build (data, model, precision and peak probes, memory check) "
              f"~{setup:.1f} s, training steps {s['train_seconds']:.1f} s, eval/checkpoints/sample/plots "
              f"~{other:.1f} s, interpreter start, imports, CLI and exit outside the run {wall - s['wall_seconds']:.1f} s")


if __name__ == "__main__":
    main()
