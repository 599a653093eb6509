"""How close the memory plan is to the memory a run really takes, and to `accelerate estimate-memory`.

Each configuration trains 3 steps in a fresh process (2 processes for FSDP). Measured:

- CUDA: ``torch.cuda.max_memory_allocated`` over the run (reset before the Trainer is built), per rank;
- CPU: the process's peak resident memory (VmHWM, reset through /proc/self/clear_refs) minus its
  resident memory just before the Trainer is built (imports done, a tiny warm-up run behind it),
  per rank. Twice: with glibc's defaults, and with ``MALLOC_MMAP_THRESHOLD_=65536``, which makes
  malloc hand every block over 64 KiB back to the kernel when it is freed, so the RSS peak is the
  peak of live memory. (By default glibc keeps freed blocks under its dynamic mmap threshold, up
  to 32 MiB each, for reuse; the difference is memory the allocator holds, not the run.)

The plan is what the run's own admission check computed (the Trainer's ``plan``): the training
step per process plus, on CPU, the data the source holds. accelerate's estimate is what its
``estimate-memory`` command computes (``calculate_maximum_sizes`` + ``estimate_training_usage``,
called directly: the command itself only looks models up on the Hugging Face hub) for a GPT-2 of the
same shape built from a local config: weights, gradients and Adam states, no activations.

    python bench/plan_accuracy.py            # all configurations; prints the table and the ratios
    python bench/plan_accuracy.py --only cnn gpt-small
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
from common import ROOT, SHAKESPEARE  # noqa: E402

# ../shared/data from the main checkout, ../../shared/data from a worktree under /work/wt
TEXT_FILE = next((p for p in (SHAKESPEARE, ROOT.parent.parent / "shared" / "data" / SHAKESPEARE.name) if p.is_file()),
                 SHAKESPEARE)
TEXT = ["data.source=file", f"data.path='{TEXT_FILE}'", "data.val_fraction=0.1"]
LOOP = ["train.threads=2", "eval.every=0", "eval.samples=0", "eval.batches=1", "log.progress=off",
        "log.tensorboard=false", "log.plots=false", "checkpoint.every=1000", "train.steps=3",
        "schedule.warmup_steps=1"]


def gpt(layers: int, width: int, heads: int, context: int, batch: int, precision: str = "fp32", **extra: str) -> list[str]:
    return [*TEXT, f"model.n_layer={layers}", f"model.n_embd={width}", f"model.n_head={heads}",
            f"data.context={context}", f"train.batch_size={batch}", f"train.precision='{precision}'",
            *[f"{k}={v}" for k, v in extra.items()]]


# name -> (recipe, overrides, processes, GPT-2 shape for accelerate or None)
CONFIGS: dict[str, tuple[str, list[str], int, dict | None]] = {
    "gpt-small": ("default", gpt(4, 128, 4, 128, 32), 1, dict(n_layer=4, n_embd=128, n_head=4, n_positions=128)),
    "gpt-wide": ("default", gpt(6, 384, 6, 256, 16), 1, dict(n_layer=6, n_embd=384, n_head=6, n_positions=256)),
    "gpt-long": ("default", gpt(4, 128, 4, 1024, 16), 1, dict(n_layer=4, n_embd=128, n_head=4, n_positions=1024)),
    "gpt-long-ckpt": ("default", gpt(4, 128, 4, 1024, 16, **{"train.activation_checkpointing": "1"}), 1,
                      dict(n_layer=4, n_embd=128, n_head=4, n_positions=1024)),
    "gpt-bf16": ("default", gpt(4, 256, 4, 256, 32, "bf16"), 1, dict(n_layer=4, n_embd=256, n_head=4, n_positions=256)),
    "lora": ("default", gpt(4, 512, 8, 256, 16, **{"adapter.method": "'lora'", "adapter.rank": "8"}), 1,
             dict(n_layer=4, n_embd=512, n_head=8, n_positions=256)),
    "qlora": ("default", gpt(4, 512, 8, 256, 16, **{"adapter.method": "'qlora'", "adapter.rank": "8"}), 1,
              dict(n_layer=4, n_embd=512, n_head=8, n_positions=256)),
    "fsdp-2": ("default", gpt(4, 384, 6, 256, 32, **{"distributed.strategy": "'fsdp'"}), 2,
               dict(n_layer=4, n_embd=384, n_head=6, n_positions=256)),
    "cnn": ("digits_cnn", ["model.channels=[64, 128, 256]", "train.batch_size=512", "train.epochs=0"], 1, None),
}


# ------------------------------------------------------------------------------------------ one measurement


def status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if value.strip().endswith("kB"):
            out[key] = int(value.split()[0]) * 1024
    return out


def child(name: str, out_dir: Path) -> None:
    """Runs inside the measured process (or each of its ranks)."""
    import gc

    import torch

    import trainwell

    recipe, sets, _, _ = CONFIGS[name]
    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available()
    with tempfile.TemporaryDirectory() as tmp:
        # warm-up: imports, kernels, the fake-tensor machinery of the plan, a process group's libraries
        warm = [s for s in sets if not s.split("=")[0] in ("model.n_embd", "model.n_layer", "data.context",
                                                          "train.batch_size", "model.channels", "model.n_head")]
        warm += ["model.n_embd=32", "model.n_head=2", "model.n_layer=1", "data.context=16", "train.batch_size=4"] if recipe == "default" \
            else ["model.channels=[8]", "train.batch_size=4"]
        run = Path(os.environ.get("PLAN_BENCH_RUN", tmp))
        with trainwell.trainer(recipe, [*warm, *LOOP], run_dir=run / "warm") as t:
            t.fit(2)
        del t
        gc.collect()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            before = torch.cuda.memory_allocated()
        base = status()["VmRSS"]
        Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
        with trainwell.trainer(recipe, [*sets, *LOOP], run_dir=run / "run") as t:
            t.fit(3)
            plan = t.plan.to_dict()
            measured = (torch.cuda.max_memory_allocated() - before) if cuda else status()["VmHWM"] - base
    (out_dir / f"rank{rank}.json").write_text(json.dumps({"measured": measured, "plan": plan}))


def measure(name: str, eager_free: bool) -> dict:
    """Run one configuration in fresh processes; the largest rank's numbers."""
    _, _, nproc, _ = CONFIGS[name]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}:{os.environ.get('PYTHONPATH', '')}"}
    if eager_free:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        env["PLAN_BENCH_RUN"] = str(out / "runs")
        me = [str(Path(__file__).resolve()), "--child", name, "--out", str(out)]
        cmd = [sys.executable, *me] if nproc == 1 else [
            sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", *me]
        done = subprocess.run(cmd, env=env, capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{name} failed:\n{done.stderr[-4000:]}")
        ranks = [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]
    return max(ranks, key=lambda r: r["measured"])


def accelerate_estimate(shape: dict | None, precision: str) -> int | None:
    """`accelerate estimate-memory`'s "Training using Adam" for a GPT-2 of this shape (local config)."""
    if shape is None:
        return None
    from accelerate import init_empty_weights
    from accelerate.commands.estimate import estimate_training_usage
    from accelerate.utils import calculate_maximum_sizes
    from transformers import AutoModel, GPT2Config

    config = GPT2Config(vocab_size=65, **shape)  # tinyshakespeare's characters
    with init_empty_weights():
        model = AutoModel.from_config(config, dtype=__import__("torch").float32)
    total, _ = calculate_maximum_sizes(model)
    usage = estimate_training_usage(total, {"fp32": "float32", "bf16": "bfloat16"}[precision])
    return int(max(usage.values()))


def mib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:8.1f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child")
    ap.add_argument("--out", type=Path)
    ap.add_argument("--only", nargs="*")
    args = ap.parse_args()
    if args.child:
        child(args.child, args.out)
        return
    import torch

    from trainwell.engine.peak import device_name

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"device: {device_name(device)}; torch {torch.__version__}")
    rows = []
    for name in args.only or CONFIGS:
        _, sets, nproc, shape = CONFIGS[name]
        eager = measure(name, eager_free=True)
        glibc = measure(name, eager_free=False) if device.type == "cpu" else None
        plan = eager["plan"]
        predicted = plan["peak"] + (plan["data"] if device.type == "cpu" else 0)
        acc = accelerate_estimate(shape, plan["precision"])
        if acc is not None and nproc > 1:
            acc = acc  # accelerate has no per-rank estimate: its number is for the whole model
        rows.append((name, nproc, predicted, eager["measured"], glibc["measured"] if glibc else None, acc))
        r = rows[-1]
        print(f"{name:<14} ranks {nproc}  plan {mib(r[2])} MiB  measured {mib(r[3])} MiB"
              f"{'' if glibc is None else f' (glibc defaults {mib(r[4])})'}  plan/measured {r[2] / r[3]:.3f}"
              f"  accelerate {mib(acc)} MiB" + (f" ({acc / r[3]:.3f})" if acc else ""), flush=True)
    print()
    hdr = "| config | ranks | plan MiB | measured MiB | plan / measured |"
    hdr += " measured, glibc defaults | plan / that |" if device.type == "cpu" else ""
    print(hdr + " accelerate MiB | accelerate / measured |")
    print("|" + "---|" * (hdr.count("|") + 1))
    for name, nproc, pred, meas, glibc_m, acc in rows:
        line = f"| {name} | {nproc} | {pred / 2**20:.1f} | {meas / 2**20:.1f} | {pred / meas:.3f} |"
        if device.type == "cpu":
            line += f" {glibc_m / 2**20:.1f} | {pred / glibc_m:.3f} |"
        line += f" {'-' if acc is None else f'{acc / 2**20:.1f}'} | {'-' if acc is None else f'{acc / meas:.3f}'} |"
        print(line)
    worst = max(abs(p / m - 1) for _, _, p, m, _, _ in rows)
    print(f"\nworst |plan / measured - 1| = {worst:.3f} (goal <= 0.10)")


if __name__ == "__main__":
    main()
