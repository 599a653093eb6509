"""Forgetting vs learning when fine-tuning a code model on Shakespeare: full FT, LoRA, QLoRA, replay.

1. Pretrain: the default recipe (4 x 128 GPT, characters of the Python standard library),
   shortened to --pretrain-steps.
2. Fine-tune that checkpoint on tinyshakespeare with each shipped transfer recipe, for --steps,
   logging the target loss (val/loss, Shakespeare) and the retain loss (retain/loss, held-out
   stdlib files) every --every steps.
3. Print a table (target loss, retain loss, the gap of each method to full fine-tuning,
   trainable state, peak process memory) and draw bench/transfer.png (retain vs target loss
   along each run).

    python bench/transfer.py [--pretrain-steps 500] [--steps 200] [--every 50] [--out runs/bench-transfer]

Quality numbers are not disturbed by other load on the machine; the seconds are.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import SHAKESPEARE, env_note, read_jsonl, timed_process, trainwell_cmd  # noqa: E402

METHODS = {"full": "finetune_full", "lora": "finetune_lora", "qlora": "finetune_qlora",
           "replay": "finetune_replay"}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pretrain-steps", type=int, default=500)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--every", type=int, default=50)
    ap.add_argument("--out", default="runs/bench-transfer")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run (1 is fastest on a busy "
                    "machine; 0 = torch's default)")
    a = ap.parse_args()
    out = Path(a.out)
    threads = ["--set", f"train.threads={a.threads}"]
    pre = out / "pretrain"
    ckpt = pre / "checkpoints" / f"step-{a.pretrain_steps}"
    if not ckpt.is_dir():
        wall, _ = timed_process(trainwell_cmd(
            "train", "default", "--run-dir", str(pre), "--set", f"train.steps={a.pretrain_steps}",
            "--set", "eval.every=0", "--set", f"checkpoint.every={a.pretrain_steps}", "--set", "eval.samples=0",
            "--set", "log.progress=off", *threads))
        print(f"pretrained {a.pretrain_steps} steps in {wall:.0f}s")
    pre_sum = json.loads((pre / "summary.json").read_text())
    print(f"pretrained model: {pre_sum['parameters']:,} parameters, {a.pretrain_steps} steps, "
          f"stdlib val loss {pre_sum['val_loss']:.3f} nats/char; {env_note()}")

    rows = {}
    for method in a.methods.split(","):
        run = out / method
        if not (run / "summary.json").is_file():
            wall, _ = timed_process(trainwell_cmd(
                "train", METHODS[method], "--run-dir", str(run), "--set", f"train.init_from={ckpt}",
                "--set", f"data.path={SHAKESPEARE}", "--set", f"train.steps={a.steps}",
                "--set", f"eval.every={a.every}", "--set", "eval.samples=0", "--set", "log.progress=off",
                *threads))
            print(f"{method}: {wall:.0f}s")
        s = json.loads((run / "summary.json").read_text())
        evals = [r for r in read_jsonl(run / "metrics.jsonl") if "retain/loss" in r]
        rows[method] = dict(summary=s, evals=evals)

    # the starting point: the pretrained model on both sets (the first fine-tuning eval is after --every steps)
    start = evaluate_start(ckpt, out, threads)
    full = rows.get("full", {}).get("evals", [{}])[-1].get("val/loss")
    print(f"\nbefore fine-tuning: Shakespeare val loss {start['val/loss']:.3f}, "
          f"retain (stdlib val) loss {start['retain/loss']:.3f} nats/char\n")
    print("| method | target loss (Shakespeare val) | gap to full FT | retain loss (stdlib val) | "
          "retain increase | trainable params | trainable state | peak RSS |")
    print("|---|---|---|---|---|---|---|---|")
    for method, r in rows.items():
        last, s = r["evals"][-1], r["summary"]
        gap = f"{last['val/loss'] - full:+.3f}" if full is not None else "n/a"
        print(f"| {method} | {last['val/loss']:.3f} | {gap} | {last['retain/loss']:.3f} | "
              f"{last['retain/loss'] - start['retain/loss']:+.3f} | {s['trainable_parameters']:,} of "
              f"{s['total_parameters']:,} | {s['trainable_state_bytes'] / 2**20:.2f} MiB | {s['peak_rss_mb']:.0f} MB |")
    plot(rows, start, Path(__file__).with_name("transfer.png"))


def evaluate_start(ckpt: Path, out: Path, threads: list[str]) -> dict[str, float]:
    """Target and retain loss of the pretrained model itself (a 1-step run at lr 0 evaluates it)."""
    run = out / "start"
    if not (run / "summary.json").is_file():
        timed_process(trainwell_cmd(
            "train", "finetune_full", "--run-dir", str(run), "--set", f"train.init_from={ckpt}",
            "--set", f"data.path={SHAKESPEARE}", "--set", "train.steps=1", "--set", "optim.lr=0",
            "--set", "eval.samples=0", "--set", "log.progress=off", "--set", "log.plots=false", *threads))
    return [r for r in read_jsonl(run / "metrics.jsonl") if "retain/loss" in r][-1]


def plot(rows: dict, start: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for method, r in rows.items():
        xs = [start["val/loss"]] + [e["val/loss"] for e in r["evals"]]
        ys = [start["retain/loss"]] + [e["retain/loss"] for e in r["evals"]]
        ax.plot(xs, ys, marker="o", ms=3, label=method)
        ax.annotate(f"{r['evals'][-1]['step']}", (xs[-1], ys[-1]), fontsize=7)
    ax.scatter([start["val/loss"]], [start["retain/loss"]], color="k", zorder=5, label="pretrained")
    ax.set_xlabel("target loss: Shakespeare val (nats/char)")
    ax.set_ylabel("retain loss: held-out stdlib code (nats/char)")
    ax.set_title("Fine-tuning a code model on Shakespeare: learning vs forgetting")
    ax.invert_xaxis()
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"\nplot: {path}")


if __name__ == "__main__":
    main()
