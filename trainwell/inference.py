"""Use a finished (or running) run: evaluate or sample from one of its checkpoints (`trainwell eval`,
`trainwell generate`, and the same from Python)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from trainwell import checkpoint as ckpt
from trainwell.config import Config, load_config
from trainwell.engine.job import Job, evaluate
from trainwell.engine.precision import Precision, choose_precision, recorded_precision
from trainwell.engine.prepare import prepare_model
from trainwell.engine.restore import check_model_fits, newest_valid
from trainwell.engine.trainer import pick_device
from trainwell.errors import CheckpointError, TrainwellError
from trainwell.paradigms import build_job


def run_config(run_dir: Path, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    path = Path(run_dir) / "config.toml"
    if not path.is_file():
        raise TrainwellError(f"{run_dir} is not a run directory (no config.toml); pass the folder a "
                             f"`trainwell train` run wrote, e.g. runs/default-20260101-120000.")
    return load_config(str(path), overrides)


def pick_checkpoint(run_dir: Path, checkpoint: str | None) -> Path:
    if checkpoint:
        path = Path(checkpoint)
        if not path.is_dir():
            path = Path(run_dir) / "checkpoints" / checkpoint
        if not path.is_dir():
            raise CheckpointError(f"checkpoint {checkpoint} not found (looked for a folder of that name and "
                                  f"in {run_dir}/checkpoints); `ls {run_dir}/checkpoints` lists them.")
        ckpt.verify(path)
        return path
    return newest_valid(Path(run_dir) / "checkpoints", "train first, or pass --checkpoint.")


def load_for_inference(run_dir: Path, checkpoint: str | None = None, *, merge: bool = False
                       ) -> tuple[Config, Job, Path, torch.device]:
    """The run's model at a checkpoint; with LoRA adapters, ``merge`` folds them into the base."""
    cfg = run_config(run_dir)
    device = pick_device(cfg.train.device)
    job = build_job(cfg, device)
    path = pick_checkpoint(run_dir, checkpoint)
    adapted, _ = prepare_model(cfg, job.model, run_precision(cfg, job, run_dir, device).dtype)
    check_model_fits(path, adapted)
    adapted.load_state_dict(ckpt.load_entry(path, "model", verified=True))  # pick_checkpoint verified it
    if merge:
        if adapted.handle is None:
            raise TrainwellError(f"the run in {run_dir} has no adapters to merge (adapter.method = 'none').")
        from trainwell.adapters.lora import merge as merge_adapter

        job.model = merge_adapter(adapted.handle)
    job.model.eval()
    for p in job.model.parameters():
        p.requires_grad_(False)  # frozen: inference never builds a graph
    return cfg, job, path, device


def run_precision(cfg: Config, job: Job, run_dir: Path, device: torch.device) -> Precision:
    """The precision the run trained with: "auto" as its meta.json recorded it at the start (a run
    written before precisions were recorded: decided as on this machine)."""
    return Precision(choose_precision(cfg, job.model, device, previous=recorded_precision(run_dir))[0], device)


def eval_checkpoint(run_dir: Path, checkpoint: str | None = None, *, merge: bool = False) -> dict[str, Any]:
    cfg, job, path, device = load_for_inference(run_dir, checkpoint, merge=merge)
    t0 = time.perf_counter()
    metrics = evaluate(job, device, run_precision(cfg, job, run_dir, device).autocast)
    return {"checkpoint": str(path), **metrics, **{k: v for k, v in job.facts.items() if "unigram" in k},
            "seconds": round(time.perf_counter() - t0, 3)}


def generate(run_dir: Path, prompt: str, *, checkpoint: str | None = None, n: int = 1,
             max_new_tokens: int = 200, temperature: float = 0.8, top_k: int = 0,
             seed: int = 0, merge: bool = False, stop: tuple[str, ...] = ()) -> dict[str, Any]:
    cfg, job, path, device = load_for_inference(run_dir, checkpoint, merge=merge)
    if job.sample is None:
        raise TrainwellError(f"the run in {run_dir} trains a model that does not generate text.")
    t0 = time.perf_counter()
    texts = job.sample(job.model, prompt, n, max_new_tokens, temperature, top_k, seed, stop=tuple(stop))
    seconds = time.perf_counter() - t0
    return {"checkpoint": str(path), "samples": texts,
            "ms_per_token": round(1000 * seconds / max(1, n * max_new_tokens), 3)}
