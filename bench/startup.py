"""Target 5: startup. `trainwell --help` and recipe validation must not import torch; report
the time from process start to the first optimizer step of the default recipe.

    python bench/startup.py
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import read_jsonl, trainwell_cmd  # noqa: E402


def wall(args: list[str], reps: int = 5, env: dict | None = None) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        subprocess.run(args, capture_output=True, check=True, env=env)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def first_step(cache: str) -> float:
    run = Path(tempfile.mkdtemp(prefix="bench-start-")) / "run"
    env = {**os.environ, "TRAINWELL_CACHE": cache}
    t0 = time.time()
    subprocess.run(trainwell_cmd("train", "--run-dir", str(run), "--set", "train.steps=2", "--set", "log.every=1",
                                 "--set", "eval.every=0", "--set", "eval.samples=0", "--set", "log.plots=false"),
                   capture_output=True, check=True, env=env)
    first = min(r["time"] for r in read_jsonl(run / "metrics.jsonl") if r["step"] == 1)
    return first - t0


def main() -> None:
    py = wall([sys.executable, "-c", "pass"])
    torch_import = wall([sys.executable, "-c", "import torch"])
    helps = wall(trainwell_cmd("--help"))
    check = wall(trainwell_cmd("check", "default", "--set", "optim.lr=1e-3"))
    leaked = subprocess.run([sys.executable, "-c", "import sys; from trainwell.cli import app\n"
                             "from trainwell.config import load_config; load_config('default')\n"
                             "print(sorted(m for m in ('torch','numpy','matplotlib','tensorboard') if m in sys.modules))"],
                            capture_output=True, text=True).stdout.strip()
    print(f"python -c pass              {py:.3f} s")
    print(f"python -c 'import torch'    {torch_import:.3f} s")
    print(f"trainwell --help            {helps:.3f} s   (heavy modules imported by cli + validation: {leaked})")
    print(f"trainwell check default     {check:.3f} s")
    cold = first_step(tempfile.mkdtemp(prefix="cold-cache-"))
    warm_cache = tempfile.mkdtemp(prefix="warm-cache-")
    first_step(warm_cache)
    warm = statistics.median(first_step(warm_cache) for _ in range(3))
    print(f"time to first optimizer step, default recipe: {warm:.2f} s with the token cache warm, "
          f"{cold:.2f} s cold (tokenizing the stdlib once)")


if __name__ == "__main__":
    main()
