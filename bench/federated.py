"""Federated training on Flower's simulation runtime, against centralized training in the same invocation.

    python bench/federated.py                  # everything (~10-40 min on 2 cores); --only fl dp robust lora
    python bench/federated.py --quick          # a small version of each section, to check it works

Sections (digits = scikit-learn's 8x8 digits, the recipe's fixed 80/20 split: 1437 train, 360 test):
  fl      10 silos, IID and Dirichlet(alpha = 0.1) by label: test accuracy vs round for FedAvg, FedProx and
          FedAdam, next to centralized training with the same total number of optimizer steps (rounds x
          silos x local steps, same batch); rounds to reach 95 % of the centralized accuracy; bytes per round
  dp      client-level DP-FedAvg (clip each silo's update, Gaussian noise on the average, RDP accountant):
          accuracy at epsilon = 1, 4, 8 (delta = 1e-5) with 10 and with 100 silos, vs the same without DP
  robust  one poisoned silo of 10 (labels flipped, or its update scaled by -10) against FedAvg, FedMedian,
          FedTrimmedAvg and Krum
  lora    the code GPT: pretrained on the stdlib without asyncio, email, multiprocessing and tkinter, then
          LoRA-tuned on those four packages, one silo each (federated) or pooled (centralized): held-out loss
          of their validation files; bytes per round (adapters) vs the full model

Accuracy and loss numbers do not depend on the machine's load (the silos are deterministic); wall times do.
Writes bench/federated.json and bench/federated.png.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

DIGITS = """
description = "digits, federated bench"
[data]
name = "sklearn"
dataset = "digits"
[model]
name = "mlp"
hidden = [64, 64]
dropout = 0.0
[objective]
name = "classify"
[optim]
lr = 3e-3
weight_decay = 1e-4
[schedule]
name = "constant"
warmup_steps = 0
[train]
batch_size = 32
seed = 0
[eval]
samples = 0
every = 100
batches = 100
[checkpoint]
every = 100000
keep = 1
[log]
plots = false
tensorboard = false
progress = "off"
every = 100
"""

LORA_SILOS = ["asyncio", "email", "multiprocessing", "tkinter"]


def train(out: Path, name: str, text: str, sets: list[str]) -> dict:
    """One run (federated ones in Flower's simulation runtime); its summary plus wall seconds."""
    from trainwell.api import train as run
    from trainwell.config import load_config

    cfg = load_config(text=text, overrides=sets)
    t0 = time.perf_counter()
    result = run(cfg, run_dir=out / name)
    s = dict(result.summary)
    s["wall_s"] = round(time.perf_counter() - t0, 1)
    s["run_dir"] = str(out / name)
    acc = s.get("val_accuracy_by_round")
    print(f"{name}: {s.get('val_accuracy', s.get('val_loss'))} ({s['wall_s']} s)"
          + (f" curve {acc[::max(1, len(acc) // 6)]}" if acc else ""), flush=True)
    return s


def curve(run_dir: str, key: str) -> list[tuple[int, float]]:
    from trainwell.track.metrics import read_metrics

    return [(r["step"], r[key]) for r in read_metrics(Path(run_dir) / "metrics.jsonl") if key in r]


def rounds_to(acc: list[float], target: float) -> int | None:
    return next((i + 1 for i, a in enumerate(acc) if a >= target), None)


# ---------------------------------------------------------------------------- sections


def section_fl(out: Path, quick: bool) -> dict:
    rounds, local, silos = (6, 5, 10) if quick else (30, 10, 10)
    steps = rounds * local * silos
    central = train(out, "central", DIGITS, [f"train.steps={steps}", f"eval.every={local * silos}"])
    c_curve = curve(central["run_dir"], "val/accuracy")
    c_acc = c_curve[-1][1]
    res: dict = {"rounds": rounds, "local_steps": local, "silos": silos, "central_steps": steps,
                 "central_accuracy": c_acc, "central_curve": c_curve, "central_wall_s": central["wall_s"], "runs": {}}
    strategies = {"fedavg": [], "fedprox": ["federated.strategy_options={proximal_mu = 0.1}"],
                  "fedadam": ["federated.strategy_options={eta = 0.01}"]}
    for part, psets in (("iid", ["federated.partition=iid"]),
                        ("dirichlet0.1", ["federated.partition=dirichlet", "federated.alpha=0.1"])):
        for strat, ssets in strategies.items():
            s = train(out, f"{part}-{strat}", DIGITS, [
                f"federated.silos={silos}", f"federated.rounds={rounds}", f"federated.local_steps={local}",
                f"federated.strategy={strat}", *psets, *ssets])
            acc = s["val_accuracy_by_round"]
            res["runs"][f"{part}/{strat}"] = {
                "accuracy_by_round": acc, "final": acc[-1], "best": max(acc),
                "rounds_to_95pct_central": rounds_to(acc, 0.95 * c_acc),
                "bytes_to_silos_per_round": s["bytes_to_silos_per_round"],
                "bytes_from_silos_per_round": s["bytes_from_silos_per_round"], "wall_s": s["wall_s"]}
    return res


def section_dp(out: Path, quick: bool) -> dict:
    rounds, local = (3, 10) if quick else (10, 30)
    res: dict = {"rounds": rounds, "local_steps": local, "delta": 1e-5, "clip": 1.0, "model": "linear (softmax "
                 "regression on the 64 pixels)", "runs": {}}
    for silos in ((10,) if quick else (10, 100)):
        for eps in (0.0, 1.0, 4.0, 8.0):
            dp = [f"federated.dp_epsilon={eps}", "federated.dp_clip=1.0"] if eps else []
            s = train(out, f"dp-{silos}-eps{eps:g}", DIGITS, [
                "model.hidden=[]", f"federated.silos={silos}", f"federated.rounds={rounds}",
                f"federated.local_steps={local}", *dp])
            res["runs"][f"{silos}/{eps:g}"] = {"accuracy": s["val_accuracy"], "epsilon": s.get("epsilon"),
                                               "noise_multiplier": s.get("noise_multiplier"), "wall_s": s["wall_s"]}
    return res


def section_robust(out: Path, quick: bool) -> dict:
    rounds, local = (4, 5) if quick else (20, 10)
    common = ["federated.silos=10", f"federated.rounds={rounds}", f"federated.local_steps={local}"]
    res: dict = {"rounds": rounds, "local_steps": local, "silos": 10, "attackers": 1, "runs": {}}
    res["runs"]["none/fedavg"] = train(out, "clean-fedavg", DIGITS, common)["val_accuracy"]
    defences = {"fedavg": [], "fedmedian": [], "fedtrimmedavg": ["federated.strategy_options={beta = 0.1}"],
                "krum": ["federated.strategy_options={num_malicious_nodes = 1}"]}
    for attack in ("flip_labels", "scale_update"):
        for strat, ssets in defences.items():
            s = train(out, f"{attack}-{strat}", DIGITS, [*common, f"federated.attack={attack}",
                                                         f"federated.strategy={strat}", *ssets])
            res["runs"][f"{attack}/{strat}"] = s["val_accuracy"]
    return res


def section_lora(out: Path, quick: bool) -> dict:
    pre_steps, rounds, local = (60, 2, 5) if quick else (600, 10, 20)
    gpt = ["model.n_layer=2", "model.n_embd=128", "model.n_head=4", "data.context=128", "train.batch_size=32",
           "train.precision=fp32", "schedule.warmup_steps=50", "eval.samples=0", "log.progress=off",
           "log.plots=false", "log.tensorboard=false", "checkpoint.every=100000", "eval.batches=40"]
    from trainwell.config import recipe_text

    default = recipe_text("default")[1]
    pre = train(out, "lora-base", default, [*gpt, f"train.steps={pre_steps}", f"eval.every={pre_steps}",
                                            f"data.exclude_packages={LORA_SILOS}"])
    base_ckpt = str(Path(pre["run_dir"]) / "checkpoints" / f"step-{pre_steps}")
    tune = [*gpt, f"train.init_from={base_ckpt}", "adapter.method=lora", "adapter.rank=8",
            f"data.packages={LORA_SILOS}", "optim.lr=2e-3", "schedule.name=constant", "schedule.warmup_steps=0"]
    steps = rounds * local * len(LORA_SILOS)
    central = train(out, "lora-central", default, [*tune, f"train.steps={steps}", f"eval.every={local * len(LORA_SILOS)}"])
    fed = train(out, "lora-federated", default, [
        *tune, f"federated.silos={len(LORA_SILOS)}", f"federated.rounds={rounds}", f"federated.local_steps={local}",
        "federated.partition=packages", f"federated.packages={LORA_SILOS}"])
    fed_curve = fed["val_loss_by_round"]
    base_loss = curve(fed["run_dir"], "val/loss")[0][1]  # round 0: the pretrained base, before any tuning
    return {"packages": LORA_SILOS, "pretrain_steps": pre_steps, "rounds": rounds, "local_steps": local,
            "central_steps": steps, "base_heldout_loss": base_loss,
            "central_heldout_loss": central["val_loss"], "federated_heldout_loss": fed["val_loss"],
            "federated_loss_by_round": fed_curve,
            "central_curve": curve(central["run_dir"], "val/loss"),
            "adapter_bytes_per_message": fed["global_model_bytes"], "full_model_bytes": fed["full_model_bytes"],
            "bytes_to_silos_per_round": fed["bytes_to_silos_per_round"],
            "bytes_from_silos_per_round": fed["bytes_from_silos_per_round"],
            "trainable_parameters": fed.get("trainable_parameters"), "wall_s": {"pretrain": pre["wall_s"],
            "central": central["wall_s"], "federated": fed["wall_s"]}}


# ---------------------------------------------------------------------------- report


def tables(r: dict) -> str:
    lines = []
    if "fl" in r:
        fl = r["fl"]
        lines += [f"Digits, {fl['silos']} silos, {fl['rounds']} rounds x {fl['local_steps']} local steps (batch 32); "
                  f"centralized: {fl['central_steps']} steps on all the data, test accuracy "
                  f"{fl['central_accuracy']:.4f} ({fl['central_wall_s']} s).", "",
                  "| partition | strategy | final acc | best acc | rounds to 95 % of centralized | bytes to silos / round | bytes from silos / round | wall s (under load) |",
                  "|---|---|---|---|---|---|---|---|"]
        for k, v in fl["runs"].items():
            part, strat = k.split("/")
            lines.append(f"| {part} | {strat} | {v['final']:.4f} | {v['best']:.4f} | {v['rounds_to_95pct_central'] or 'not reached'} "
                         f"| {v['bytes_to_silos_per_round']:,.0f} | {v['bytes_from_silos_per_round']:,.0f} | {v['wall_s']} |")
        lines.append("")
    if "dp" in r:
        dp = r["dp"]
        lines += [f"Client-level DP-FedAvg, {dp['model']}, {dp['rounds']} rounds x {dp['local_steps']} local steps, "
                  f"clip {dp['clip']}, delta {dp['delta']:g}:", "",
                  "| silos | epsilon (target) | epsilon (accountant) | noise multiplier | test accuracy |", "|---|---|---|---|---|"]
        for k, v in dp["runs"].items():
            silos, eps = k.split("/")
            lines.append(f"| {silos} | {'no DP' if eps == '0' else eps} | {v['epsilon'] if v['epsilon'] is not None else '-'} "
                         f"| {v['noise_multiplier'] and round(v['noise_multiplier'], 3) or '-'} | {v['accuracy']:.4f} |")
        lines.append("")
    if "robust" in r:
        ro = r["robust"]
        lines += [f"One poisoned silo of {ro['silos']} ({ro['rounds']} rounds x {ro['local_steps']} local steps, IID); "
                  f"no attack, FedAvg: {ro['runs']['none/fedavg']:.4f}", "",
                  "| attack | FedAvg | FedMedian | FedTrimmedAvg (beta 0.1) | Krum (f = 1) |", "|---|---|---|---|---|"]
        for attack in ("flip_labels", "scale_update"):
            row = [ro["runs"][f"{attack}/{s}"] for s in ("fedavg", "fedmedian", "fedtrimmedavg", "krum")]
            lines.append(f"| {attack} | " + " | ".join(f"{a:.4f}" for a in row) + " |")
        lines.append("")
    if "lora" in r:
        lo = r["lora"]
        lines += [f"Federated LoRA (rank 8) on {', '.join(lo['packages'])}, one silo each, {lo['rounds']} rounds x "
                  f"{lo['local_steps']} local steps; centralized LoRA: {lo['central_steps']} steps on the pooled packages; "
                  f"base pretrained {lo['pretrain_steps']} steps on the rest of the stdlib:", "",
                  "| model | held-out loss (nats/char) on the four packages' validation files |", "|---|---|",
                  f"| pretrained base | {lo['base_heldout_loss']:.4f} |",
                  f"| centralized LoRA | {lo['central_heldout_loss']:.4f} |",
                  f"| federated LoRA | {lo['federated_heldout_loss']:.4f} |", "",
                  f"Bytes per message: {lo['adapter_bytes_per_message']:,} (adapters) vs {lo['full_model_bytes']:,} "
                  f"(the whole model): {lo['adapter_bytes_per_message'] / lo['full_model_bytes']:.3f}; per round "
                  f"{lo['bytes_to_silos_per_round']:,.0f} to and {lo['bytes_from_silos_per_round']:,.0f} from the silos.", ""]
    return "\n".join(lines)


def plot(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fl = r["fl"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    per_round = fl["local_steps"] * fl["silos"]
    for ax, part in zip(axes, ("iid", "dirichlet0.1")):
        for k, v in fl["runs"].items():
            if k.startswith(part + "/"):
                acc = v["accuracy_by_round"]
                ax.plot(range(1, len(acc) + 1), acc, label=k.split("/")[1], linewidth=1.6)
        cx = [s / per_round for s, _ in fl["central_curve"]]
        ax.plot(cx, [a for _, a in fl["central_curve"]], "k--", label="centralized (same steps)", linewidth=1.2)
        ax.axhline(0.95 * fl["central_accuracy"], color="grey", linestyle=":", linewidth=1, label="95 % of centralized")
        ax.set_title(f"digits, {fl['silos']} silos, {'IID' if part == 'iid' else 'Dirichlet alpha = 0.1'}")
        ax.set_xlabel(f"round (= {per_round} optimizer steps, all silos together)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("test accuracy")
    axes[1].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--only", nargs="*", default=["fl", "dp", "robust", "lora"])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--out", default="")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench-federated-"))
    results_path = HERE / ("federated-quick.json" if args.quick else "federated.json")
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    from bench.common import env_note

    results["env"] = env_note()
    for name in args.only:
        results[name] = globals()[f"section_{name}"](out, args.quick)
        results_path.write_text(json.dumps(results, indent=1))
    if "fl" in results and not args.quick:
        plot(results, HERE / "federated.png")
    print(tables(results))
    print(f"\nruns in {out}; results in {results_path}")


if __name__ == "__main__":
    main()
