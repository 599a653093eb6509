"""What a person reads at the end of a run: samples, the paradigm's extras, summary.json, plots."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from trainwell.config import Config
from trainwell.engine.job import Job
from trainwell.engine.state import LoopState


def write_summary(cfg: Config, run_dir: Path, job: Job, model: torch.nn.Module, loop: LoopState,
                  last_val: dict[str, float], *, first_step_s: float | None, wall_s: float
                  ) -> tuple[dict[str, Any], list[str]]:
    """``model``: the whole trained model in this process (under FSDP a plain copy rebuilt from the
    final checkpoint). Returns (summary, samples)."""
    from trainwell.track.meta import write_json

    samples: list[str] = []
    if job.sample is not None and cfg.eval.samples:
        samples = job.sample(model, cfg.eval.prompt, cfg.eval.samples, cfg.eval.sample_tokens,
                             cfg.eval.temperature, cfg.eval.top_k, cfg.train.seed)
        (run_dir / "samples.txt").write_text(
            "".join(f"--- sample {i + 1} ---\n{s}\n" for i, s in enumerate(samples)), encoding="utf-8")
    extra = job.finish(model, run_dir) if job.finish is not None else {}
    summary = {"steps": loop.step,
               **{k.replace("/", "_"): round(v, 4) for k, v in last_val.items()},
               f"best_{job.best_metric.replace('/', '_')}": (
                   None if loop.best_val is None else loop.best_val * (1 if job.best_mode == "min" else -1)),
               "best_step": loop.best_step,
               f"{job.units}_per_s": round(loop.units_seen / max(loop.train_seconds, 1e-9), 1),
               f"{job.units}_seen": loop.units_seen, "train_seconds": round(loop.train_seconds, 2),
               "wall_seconds": round(wall_s, 2),
               "time_to_first_step_s": round(first_step_s, 3) if first_step_s else None,
               "peak_rss_mb": peak_rss_mb(),
               **job.facts, **extra}
    write_json(run_dir / "summary.json", summary)
    if cfg.log.plots:
        from trainwell.track.plots import draw_plots

        draw_plots(run_dir)
    return summary, samples


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)
