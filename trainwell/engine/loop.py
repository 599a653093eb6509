"""The training loop: one loop for every paradigm.

Read ``train`` top to bottom: set up, restore, then per step fetch batches, forward, loss,
backward, clip, optimizer step, schedule, log, evaluate, checkpoint. Paradigm-specific work
lives in the Job (model, source, objective, evaluation), never in here.
"""

from __future__ import annotations

import math
import os
import random
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwell import checkpoint as ckpt
from trainwell.checkpoint.rng import RNGState
from trainwell.config import Config, config_hash, to_toml, trajectory_items
from trainwell.distributed.world import World, collective, inject_fault, setup, teardown
from trainwell.engine.job import Job, build_job, evaluate, to_device
from trainwell.engine.peak import PeakMeter
from trainwell.engine.optim import build_optimizer, lr_factor, set_lr
from trainwell.engine.precision import Precision, choose_precision, recorded_precision
from trainwell.engine.state import LoopState
from trainwell.engine.transfer import prepare_model
from trainwell.engine.wrap import apply_activation_checkpointing, maybe_compile
from trainwell.threads import applied as openmp_settings
from trainwell.errors import CheckpointError, ConfigError, TrainingDiverged, TrainwellError


class Interrupted(TrainwellError):
    exit_code = 130


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    samples: list[str]


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def total_steps(cfg: Config, job: Job) -> int:
    if job.total_steps:
        return job.total_steps
    if cfg.train.epochs:
        return max(1, cfg.train.epochs * job.batches_per_epoch // cfg.train.grad_accum)
    return cfg.train.steps


def train(cfg: Config, run_dir: Path, *, resume: bool = False, branch_from: Path | None = None,
          recipe_name: str = "") -> RunResult:
    """Train ``cfg`` into ``run_dir`` (created by the caller), resuming or branching if asked.

    Started by torchrun with several processes, each one joins the process group here and
    trains its share (see trainwell/distributed); with one process nothing changes.
    """
    world = setup(cfg)
    try:
        return run(cfg, run_dir, world, resume=resume, branch_from=branch_from, recipe_name=recipe_name)
    finally:
        teardown(world)


def run(cfg: Config, run_dir: Path, world: World, *, resume: bool, branch_from: Path | None,
        recipe_name: str) -> RunResult:
    from trainwell.track.console import Progress
    from trainwell.track.meta import run_meta, write_json
    from trainwell.track.metrics import MetricsJSONL

    t_start = time.perf_counter()
    single = world.size == 1
    device = world.device or pick_device(cfg.train.device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)

    # ---- build: model + source + objective (the Job), optimizer, precision
    job = build_job(cfg, device)
    precision_name, precision_reason = choose_precision(  # "auto": bf16 only where measured faster
        cfg, job.model, device, previous=recorded_precision(run_dir) if resume else None, world=world)
    precision = Precision(precision_name, device)
    # pretrained weights, then full fine-tuning / freezing / LoRA / QLoRA (trainwell/adapters)
    adapted, init_notes = prepare_model(cfg, job.model, precision.dtype)
    job.facts.update(adapted.facts())
    if cfg.train.activation_checkpointing:
        apply_activation_checkpointing(job.model, cfg.train.activation_checkpointing)
    parallel_model: Any = job.model
    if not single:  # data parallel: this rank's slice of each batch; DDP or FSDP2 around the model
        from trainwell.distributed import parallel
        from trainwell.distributed.reduce import evaluate as evaluate_sharded, mean_over_ranks, reduce_step

        parallel.shard_source(job.source, cfg, world)
        parallel.seed_rank(cfg.train.seed, world.rank)
        parallel_model = parallel.parallelize(job.model, cfg, world, precision=precision.name)
    optimizer = build_optimizer(job.model, cfg.optim, device)  # after FSDP: over the parameter shards
    step_model = maybe_compile(parallel_model, cfg.train.compile) if single else parallel_model
    loop = LoopState()
    app_state: dict[str, Any] = {"model": adapted, "optimizer": optimizer, "data": job.source,
                                 "rng": RNGState(), "loop": loop}
    if precision.scaler is not None:
        app_state["scaler"] = precision.scaler
    if not single:  # parameter-name keyed state, saved as per-rank shards
        from trainwell.distributed import checkpoint as dist_ckpt

        app_state = dist_ckpt.sharded_app_state(app_state, job.model, optimizer)
    steps = total_steps(cfg, job)
    # the peak of all ranks' devices together: throughput below counts every rank's units
    peak = PeakMeter(device, precision.dtype or torch.float32, world.size) if job.flops_per_unit else None

    # ---- restore: --resume continues this run exactly; --from branches a new one
    ckpt_root = run_dir / "checkpoints"
    restored_from = None
    if resume:
        restored_from = restore_latest(ckpt_root, app_state, cfg, world)
    elif branch_from is not None:
        restored_from = restore(Path(branch_from), app_state, cfg, same_config=False, world=world)

    # ---- run directory: resolved config, provenance, metric sinks (rank 0 only)
    resume_step = loop.step if restored_from else None
    if resume_step is None and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
        resume_step = 0  # torchrun restarted a group that had saved nothing yet: drop its logged steps
    sinks: list[Any] = []
    if world.main:
        (run_dir / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
        meta = run_meta(seed=cfg.train.seed, extra={
            "recipe": recipe_name, "device": str(device), "config_hash": config_hash(cfg),
            "resumed_from": str(restored_from) if restored_from else None, "facts": job.facts,
            "world_size": world.size, "strategy": world.strategy,
            "precision": precision.name, "precision_reason": precision_reason,
            "threads": f"{torch.get_num_threads()} torch threads; {openmp_settings()}"})
        write_json(run_dir / ("meta.json" if not restored_from or not resume else f"meta-resume-{loop.step}.json"),
                   meta)
        sinks.append(MetricsJSONL(run_dir / "metrics.jsonl", resume_step=resume_step))
        if cfg.log.tensorboard:
            from trainwell.track.tensorboard import TensorBoardSink

            sinks.append(TensorBoardSink(run_dir, purge_step=resume_step))
    quiet = open(os.devnull, "w") if cfg.log.progress == "off" or not world.main else None
    progress = Progress(steps, start_step=loop.step, every=cfg.log.every,
                        live=None if cfg.log.progress == "auto" else False, stream=quiet)
    saver = ckpt.AsyncSaver() if cfg.checkpoint.async_save else None
    stop = StopFlag()

    def log(step: int, values: dict[str, float]) -> None:
        for sink in sinks:
            sink.log(step, values)

    def save(step: int, val_loss: float | None, score: float | None) -> Path:
        # score: the job's best-checkpoint metric turned into lower-is-better, for keep_best
        meta_ck = {"config_hash": config_hash(cfg), "config": trajectory_items(cfg),
                   "val_loss": val_loss, "score": score, "train_seconds": loop.train_seconds}
        target = ckpt_root / f"step-{step}"
        if not single:
            dist_ckpt.save(target, app_state, world, step=step, meta=meta_ck)
            if world.main:
                ckpt.prune(ckpt_root, keep_last=cfg.checkpoint.keep, keep_best=cfg.checkpoint.keep_best,
                           best_key="score")
            return target
        if saver is not None:
            saver.save(target, app_state, step=step, meta=meta_ck)
        else:
            ckpt.save(target, app_state, step=step, meta=meta_ck)
            ckpt.prune(ckpt_root, keep_last=cfg.checkpoint.keep, keep_best=cfg.checkpoint.keep_best,
                       best_key="score")
        return target

    for note in init_notes:
        progress.message(note)
    if restored_from:
        progress.message(f"resumed from {restored_from} at step {loop.step}")
    if not single:
        progress.message(f"{world.size} processes ({world.strategy}, {device.type}); each takes "
                         f"{cfg.train.batch_size // world.size} of the global batch of {cfg.train.batch_size}")
    progress.message(f"precision {precision.name}: {precision_reason}")
    progress.message(f"run directory: {run_dir}")
    job.model.train()
    last_val: dict[str, float] = {}
    window_units, window_start = 0, time.perf_counter()
    first_step_s = None
    try:
        with stop:
            while loop.step < steps:
                t0 = time.perf_counter()
                step = loop.step
                lr = cfg.optim.lr * lr_factor(step, steps, cfg.schedule)
                set_lr(optimizer, lr)
                loss_sum, units = 0.0, 0
                for micro in range(cfg.train.grad_accum):
                    batch = to_device(next(job.source), device)
                    if single:
                        with precision.autocast():
                            out = job.objective(step_model, batch)
                        precision.backward(out.loss / cfg.train.grad_accum)
                        loss_sum += out.loss.item()
                    else:  # gradients are reduced across ranks in the last micro-batch's backward
                        if micro == 0:
                            inject_fault(world, step + 1)
                        weight = parallel.batch_weight(job.source)
                        last = micro == cfg.train.grad_accum - 1
                        with collective(world, f"the gradient all-reduce in the backward of step {step + 1}"), \
                                parallel.grad_sync(step_model, world, last):
                            with precision.autocast():
                                out = job.objective(step_model, batch)
                            precision.backward(out.loss * (weight / cfg.train.grad_accum))
                        loss_sum += out.loss.item() * weight
                    units += out.processed or out.units
                if single:
                    loss = loss_sum / cfg.train.grad_accum
                else:  # the same global mean loss, units and stop request on every rank
                    loss, units, stop_all = reduce_step(world, loss_sum, units, stop.requested,
                                                        cfg.train.grad_accum)
                    stop.requested = stop.requested or stop_all
                if not math.isfinite(loss):
                    raise diverged("loss", loss, step + 1, ckpt_root)
                precision.unscale(optimizer)
                if single:
                    grad_norm = clip_or_measure(job.model, cfg.optim.grad_clip,
                                                need=(step + 1) % cfg.log.every == 0)
                else:
                    with collective(world, f"the gradient-norm all-reduce of step {step + 1}"):
                        grad_norm = clip_or_measure(job.model, cfg.optim.grad_clip,
                                                    need=(step + 1) % cfg.log.every == 0)
                if grad_norm is not None and not math.isfinite(grad_norm) and precision.scaler is None:
                    raise diverged("gradient norm", grad_norm, step + 1, ckpt_root)
                precision.step(optimizer)
                optimizer.zero_grad(set_to_none=True)

                loop.step += 1
                loop.units_seen += units
                loop.train_seconds += time.perf_counter() - t0
                window_units += units
                if first_step_s is None:
                    first_step_s = time.perf_counter() - t_start

                if loop.step % cfg.log.every == 0 or loop.step == steps:
                    now = time.perf_counter()
                    rate = window_units / max(now - window_start, 1e-9)
                    window_units, window_start = 0, now
                    values = {"train/loss": loss, "train/lr": lr, f"train/{job.units}_per_s": rate}
                    if grad_norm is not None:
                        values["train/grad_norm"] = grad_norm
                    if peak is not None:
                        values["train/mfu"] = peak.mfu(job.flops_per_unit * rate)  # re-probes if beaten
                    step_metrics = {f"train/{k}": float(v) for k, v in out.metrics.items()}
                    values.update(step_metrics if single else mean_over_ranks(world, step_metrics))
                    if job.train_metrics is not None:
                        values.update(job.train_metrics())
                    log(loop.step, values)
                    progress.update(loop.step, values)
                else:
                    progress.update(loop.step, {})  # keeps the bar moving and the ETA measured from step 1

                val_loss, score, last_val_now = None, None, False
                if (cfg.eval.every and loop.step % cfg.eval.every == 0) or loop.step == steps:
                    last_val = evaluate(job, device, precision.autocast) if single else \
                        evaluate_sharded(job, device, precision.autocast, world)
                    last_val_now = True
                    val_loss, score = last_val.get("val/loss"), best_score(job, last_val)
                    if score is not None and (loop.best_val is None or score < loop.best_val):
                        loop.best_val, loop.best_step = score, loop.step
                    log(loop.step, last_val)
                    progress.message("step {}: {}".format(
                        loop.step, ", ".join(f"{k} {v:.4f}" for k, v in last_val.items())))
                    window_start = time.perf_counter()  # evaluation is not training throughput

                solved = last_val_now and reached(cfg, last_val)
                if loop.step % cfg.checkpoint.every == 0 or loop.step == steps or stop.requested or solved:
                    save(loop.step, val_loss, score)
                    window_start = time.perf_counter()
                if solved:
                    progress.message(f"{cfg.eval.stop_metric} reached {cfg.eval.stop_at} at step {loop.step}; stopping")
                    break
                if stop.requested:
                    raise Interrupted(f"interrupted at step {loop.step}; a checkpoint was saved — continue "
                                      f"with `trainwell train --resume {run_dir}`.")
        if saver is not None:
            saver.wait()
            ckpt.prune(ckpt_root, keep_last=cfg.checkpoint.keep, keep_best=cfg.checkpoint.keep_best,
                       best_key="score")
    finally:
        if saver is not None:
            saver.close()
        progress.close()
        if quiet is not None:
            quiet.close()
        for sink in sinks:
            sink.close()

    if not last_val:  # resumed a run that had already finished
        last_val = evaluate(job, device, precision.autocast) if single else \
            evaluate_sharded(job, device, precision.autocast, world)
    exported = adapted.export(run_dir / "adapter", base_model=cfg.train.init_from) if world.main else None
    if exported is not None:
        job.facts["adapter_dir"] = str(exported)
    return finish(cfg, run_dir, job, loop, last_val, steps,
                  first_step_s=first_step_s, wall_s=time.perf_counter() - t_start, world=world)


def finish(cfg: Config, run_dir: Path, job: Job, loop: LoopState, last_val: dict[str, float],
           steps: int, *, first_step_s: float | None, wall_s: float, world: World = World()) -> RunResult:
    """Samples, plots and the summary a person reads at the end (written by rank 0 only).

    Under FSDP no rank holds the whole model, so rank 0 rebuilds a plain one from the final
    checkpoint (as `trainwell generate` would) for sampling and the paradigm's finish.
    """
    from trainwell.track.meta import write_json

    if not world.main:
        return RunResult(run_dir=run_dir, summary={}, samples=[])
    model = job.model
    if world.strategy == "fsdp":
        model = build_job(cfg, world.device or torch.device("cpu")).model
        model.load_state_dict(ckpt.load_entry(newest_valid(run_dir / "checkpoints", "the run saved none."),
                                              "model"))
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
    return RunResult(run_dir=run_dir, summary=summary, samples=samples)


def best_score(job: Job, metrics: dict[str, float]) -> float | None:
    """The job's best-checkpoint metric as lower-is-better (val/loss as is, val/return negated)."""
    value = metrics.get(job.best_metric)
    if value is None:
        return None
    return value if job.best_mode == "min" else -value


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB, macOS bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def reached(cfg: Config, metrics: dict[str, float]) -> bool:
    """Early stop: has the configured evaluation metric reached its threshold?"""
    name = cfg.eval.stop_metric
    if not name:
        return False
    if name not in metrics:
        raise ConfigError(f"eval.stop_metric = '{name}' is not an evaluation metric of this run; it has "
                          f"{', '.join(sorted(metrics))}.")
    value = metrics[name]
    return value >= cfg.eval.stop_at if cfg.eval.stop_mode == "max" else value <= cfg.eval.stop_at


def clip_or_measure(model: torch.nn.Module, max_norm: float, *, need: bool) -> float | None:
    """Clip the global gradient norm (if configured) and return it; measure it only when logged.

    Under FSDP the gradients are DTensor shards and the norm is a DTensor (reduced over ranks).
    """
    if max_norm > 0:
        return as_float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    if need:
        return as_float(torch.nn.utils.clip_grad_norm_(model.parameters(), float("inf")))
    return None


def as_float(value: Any) -> float:
    full = getattr(value, "full_tensor", None)  # DTensor
    return float(full() if full is not None else value)


def diverged(what: str, value: float, step: int, ckpt_root: Path) -> TrainingDiverged:
    good, _ = ckpt.latest_valid(ckpt_root)
    where = f"the last good checkpoint is {good}" if good else "no checkpoint had been written yet"
    return TrainingDiverged(f"the {what} became {value} at step {step}, so training stopped before "
                            f"updating the weights; {where}. Lower optim.lr, keep optim.grad_clip > 0, "
                            f"or try train.precision = 'fp32'.")


# ---------------------------------------------------------------------------- restore


def newest_valid(root: Path, fix: str) -> Path:
    """The newest checkpoint under ``root`` that verifies; newer corrupt ones are reported on
    stderr and skipped. With none, the error ends with ``fix`` (what the user can do)."""
    path, skipped = ckpt.latest_valid(root)
    notes = "; ".join(f"{p.name} skipped: {why}" for p, why in skipped)
    if path is None:
        raise CheckpointError(f"no valid checkpoint in {root}{' (' + notes + ')' if notes else ''}; {fix}")
    if notes:
        import sys

        print(f"warning: {notes}; using {path.name}", file=sys.stderr)
    return path


def restore_latest(root: Path, app_state: dict[str, Any], cfg: Config, world: World = World()) -> Path:
    fix = "nothing to resume — start a new run with `trainwell train RECIPE` instead."
    if world.size == 1:
        path = newest_valid(root, fix)
    else:  # rank 0 picks, so every rank restores the same checkpoint
        from trainwell.distributed.world import broadcast_object

        with collective(world, "choosing the checkpoint to resume"):
            picked = broadcast_object(world, _pick(root, fix) if world.main else None)
        if isinstance(picked, str) and picked.startswith("error: "):
            raise CheckpointError(picked[len("error: "):])
        path = Path(picked)
    return restore(path, app_state, cfg, same_config=True, world=world)


def _pick(root: Path, fix: str) -> str:
    try:
        return str(newest_valid(root, fix))
    except CheckpointError as e:
        return f"error: {e}"


def restore(path: Path, app_state: dict[str, Any], cfg: Config, *, same_config: bool,
            world: World = World()) -> Path:
    manifest = ckpt.verify(path)
    if same_config:
        saved = manifest.get("meta", {}).get("config", {})
        now = trajectory_items(cfg)
        diff = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
        if diff:
            shown = ", ".join(f"{k} ({saved.get(k)!r} -> {now.get(k)!r})" for k in diff[:4])
            raise CheckpointError(f"checkpoint {path} was written by a different config: {shown}; "
                                  f"to continue with changed settings branch a new run with "
                                  f"`trainwell train RECIPE --from {path} --set ...`.")
    # the model's Stateful: the adapters' view (Adapted) in one process, ModelState on several ranks;
    # both hold the plain module as .model
    stateful = app_state["model"]
    module = stateful.model
    if getattr(stateful, "handle", None) is not None and not any(
            "lora_" in k for k in ckpt.model_shapes(path)):
        raise CheckpointError(f"checkpoint {path} holds a whole model, but this run trains LoRA adapters; start "
                              f"from a pretrained model with --set train.init_from={path} instead of --from.")
    check_model_fits(path, stateful if world.size == 1 else module)
    sharded = manifest.get("layout") == "sharded"
    try:
        if sharded:  # written by several ranks: each rank reads its rows under this run's sharding
            from trainwell.distributed import checkpoint as dist_ckpt

            target = app_state if world.size > 1 else dist_ckpt.sharded_app_state(
                app_state, module, app_state["optimizer"])
            with collective(world, f"restoring {path}"):
                dist_ckpt.load(path, target, world)
        elif world.size > 1:  # written by one process, resumed by several
            from trainwell.distributed import checkpoint as dist_ckpt

            with collective(world, f"restoring {path}"):
                dist_ckpt.load_single(path, app_state, world)
        else:
            ckpt.load(path, app_state)
    except CheckpointError:
        raise
    except (RuntimeError, ValueError, KeyError, IndexError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"checkpoint {path} does not fit this run ({first}); it was written for a "
                              f"different model, optimizer or data setup.") from None
    return path


def init_weights(model: torch.nn.Module, path: Path) -> str:
    """Copy every weight of a checkpoint whose name and shape match (transfer learning)."""
    ckpt.verify(path)
    saved = ckpt.load_entry(path, "model")
    own = model.state_dict()
    matched = {k: v for k, v in saved.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    if not matched:
        raise CheckpointError(f"train.init_from = {path}: no weight of that checkpoint matches this model's "
                              f"names and shapes; it holds a different architecture.")
    model.load_state_dict(matched, strict=False)
    skipped = sorted(set(saved) - set(matched))
    fresh = sorted(set(own) - set(matched))
    note = f"initialised {len(matched)}/{len(own)} weights from {path}"
    if skipped:
        note += f"; skipped {len(skipped)} that do not fit (e.g. {skipped[0]})"
    if fresh:
        note += f"; {len(fresh)} start fresh (e.g. {fresh[0]})"
    return note


def check_model_fits(path: Path, model: Any) -> None:
    """``model``: anything with a state_dict (the nn.Module, the adapters' Stateful, or under FSDP
    a module whose state_dict holds DTensors, whose .shape is the global shape)."""
    saved = ckpt.model_shapes(path)
    own = model.state_dict()
    for key, tensor in own.items():
        if key not in saved:
            raise CheckpointError(f"checkpoint {path} has no weight '{key}' that this model needs; it was "
                                  f"written for a different model architecture.")
        if saved[key] != tuple(tensor.shape):
            raise CheckpointError(
                f"checkpoint {path} holds '{key}' with shape {saved[key]} but the model built "
                f"from this config needs {tuple(tensor.shape)}; the model size or the data's vocabulary "
                f"differs from the run that wrote it.")
    extra = sorted(set(saved) - set(own))
    if extra:
        raise CheckpointError(f"checkpoint {path} holds weights this model lacks (e.g. '{extra[0]}'); it was "
                              f"written for a different model architecture.")


class StopFlag:
    """Turn the first SIGINT/SIGTERM into 'save a checkpoint at the end of this step and stop'."""

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested:  # second signal: give up immediately
            signal.default_int_handler(signum, frame)
        self.requested = True

    def __enter__(self) -> "StopFlag":
        import threading

        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handler)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
