"""The Trainer: build a run once, then train it as many steps at a time as the caller wants.

Read ``Trainer.fit`` top to bottom: per step fetch batches, forward, loss, backward, clip,
optimizer step, schedule, log, evaluate, checkpoint. What a paradigm trains lives in the Job
(model, source, objective, evaluation; trainwell/paradigms builds it), how a step runs on one
process or many in the Strategy (engine/strategy.py) — never in here.

    with Trainer(cfg, run_dir, build_job) as trainer:   # builds, restores, opens the run dir
        trainer.fit(10)                                  # 10 optimizer steps, state kept in memory
        trainer.fit()                                    # the rest of the run
        result = trainer.finish()                        # samples, plots, summary.json
"""

from __future__ import annotations

import math
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from trainwell import checkpoint as ckpt
from trainwell.checkpoint.rng import RNGState
from trainwell.config import Config, config_hash, to_toml, trajectory_items
from trainwell.engine.job import Job, to_device, total_steps
from trainwell.engine.optim import build_optimizer, lr_factor, set_lr
from trainwell.engine.peak import PeakMeter
from trainwell.engine.plan import admit, build_guard
from trainwell.engine.precision import Precision, choose_precision, recorded_precision
from trainwell.engine.prepare import prepare_model
from trainwell.engine.restore import check_fits, does_not_fit, newest_valid
from trainwell.engine.state import LoopState, seed_everything
from trainwell.engine.strategy import choose
from trainwell.engine.wrap import apply_activation_checkpointing
from trainwell.errors import CheckpointError, ConfigError, TrainingDiverged, TrainwellError, unexpected
from trainwell.threads import applied as openmp_settings

Build = Callable[[Config, torch.device], Job]  # the paradigm's builder: (config, device) -> Job


class Interrupted(TrainwellError):
    exit_code = 130


@dataclass
class RunResult:
    run_dir: Path
    summary: dict[str, Any]
    samples: list[str]


class Trainer:
    """One run: its Job, optimizer, precision, strategy, checkpoint state and run directory.

    ``resume=True`` continues the run in ``run_dir`` from its newest valid checkpoint exactly;
    ``branch_from`` starts a new run from a checkpoint's state with (possibly) new settings.
    """

    def __init__(self, cfg: Config, run_dir: Path, build: Build, *, resume: bool = False,
                 branch_from: Path | None = None, recipe_name: str = ""):
        self.t_start = time.perf_counter()
        self.cfg, self.run_dir, self.build = cfg, Path(run_dir), build
        self.sinks: list[Any] = []
        self.progress: Any = None
        self.saver: Any = None
        self._quiet: Any = None
        self.strategy = choose(cfg)  # joins the process group when torchrun started several
        try:
            self._build(resume)
            self.restored_from = self._restore(resume, branch_from)
            self._open_run_dir(recipe_name, resume)
        except Exception as e:
            self.close(e)
            if isinstance(e, TrainwellError):
                raise
            raise unexpected(e, "setting up the run", self.run_dir) from e
        except BaseException as e:
            self.close(e)
            raise

    # ------------------------------------------------------------------ build and restore

    def _build(self, resume: bool = False) -> None:
        cfg, s = self.cfg, self.strategy
        self.device = s.device or pick_device(cfg.train.device)
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.train.seed)
        with build_guard(cfg, self.device) as built:  # weights that cannot fit stop the build before they are written
            self.job = job = self.build(cfg, self.device)  # model + source + objective + evaluation
        # "auto": bf16 only where measured faster (a probe of the model's shapes); decided once, by rank 0
        # for every rank; a resumed run keeps the precision it started with (engine/precision.py)
        previous = recorded_precision(self.run_dir) if resume else None
        name, self.precision_reason = s.agree(
            lambda: choose_precision(cfg, job.model, self.device, previous=previous), "choosing the precision")
        self.precision = Precision(name, self.device)
        with build_guard(cfg, self.device, built):
            # pretrained weights, then full fine-tuning / freezing / LoRA / QLoRA (trainwell/adapters)
            self.adapted, self.notes = prepare_model(cfg, job.model, self.precision.dtype)
        job.facts.update(self.adapted.facts())
        if cfg.train.activation_checkpointing:
            apply_activation_checkpointing(job.model, cfg.train.activation_checkpointing)
        # the step's memory, measured on fake tensors, against what is free: before the optimizer
        # state and the activations exist (a run that cannot fit stops here with one sentence)
        self.plan = admit(cfg, job, self.precision, s, self.device, built, self.notes)
        self.step_model = s.wrap(job, cfg, self.precision.name)  # compiled, or DDP / FSDP2 with this rank's slice
        self.optimizer = build_optimizer(job.model, cfg.optim, self.device)  # after FSDP: over the shards
        self.loop = LoopState()
        state: dict[str, Any] = {"model": self.adapted, "optimizer": self.optimizer, "data": job.source,
                                 "rng": RNGState(), "loop": self.loop}
        if self.precision.scaler is not None:
            state["scaler"] = self.precision.scaler
        self.app_state = s.checkpoint_state(state, job.model, self.optimizer)
        self.total = total_steps(cfg, job)
        # MFU against the peak of all ranks' devices together (throughput counts every rank's units);
        # measured by the main process only, which alone logs it (several ranks probing the same cores
        # at once would each measure a fraction)
        dtype = self.precision.dtype or torch.float32
        self.peak = PeakMeter(self.device, dtype, s.size) if job.flops_per_unit and s.main else None

    def _restore(self, resume: bool, branch_from: Path | None) -> Path | None:
        """--resume continues this run exactly; --from branches a new one from a checkpoint."""
        if resume:
            fix = "nothing to resume — start a new run with `trainwell train RECIPE` instead."
            path = self.strategy.pick_latest(self.run_dir / "checkpoints", lambda root: newest_valid(root, fix))
        elif branch_from is not None:
            path = Path(branch_from)
            ckpt.verify(path)  # every file hashed once, here; the load below trusts it
        else:
            return None
        self._load(path, same_config=resume)
        return path

    def load(self, path: Path) -> None:
        """Put this run's own checkpoint ``path`` (e.g. an earlier step) back into the built Trainer in
        place: model, optimizer, data position, RNG streams, counters. A federated silo rewinds so when
        a restarted server repeats a round the silo had already trained."""
        ckpt.verify(path)
        self._load(Path(path), same_config=True)

    def _load(self, path: Path, *, same_config: bool) -> None:
        manifest = ckpt.read_manifest(path)
        check_fits(path, manifest, self.adapted, self.cfg, same_config=same_config)
        try:
            self.strategy.load(path, self.app_state, manifest)
        except CheckpointError:
            raise
        except (RuntimeError, ValueError, KeyError, IndexError) as e:
            raise does_not_fit(path, e) from None

    def _open_run_dir(self, recipe_name: str, resume: bool) -> None:
        """Resolved config, provenance and metric sinks (written by the main process only)."""
        from trainwell.track.console import Progress
        from trainwell.track.meta import run_meta, write_json
        from trainwell.track.metrics import MetricsJSONL

        cfg, loop, s = self.cfg, self.loop, self.strategy
        resume_step = loop.step if self.restored_from else None
        if resume_step is None and os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") != "0":
            resume_step = 0  # torchrun restarted a group that had saved nothing yet: drop its logged steps
        if s.main:
            (self.run_dir / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
            meta = run_meta(seed=cfg.train.seed, extra={
                "recipe": recipe_name, "device": str(self.device), "config_hash": config_hash(cfg),
                "resumed_from": str(self.restored_from) if self.restored_from else None, "facts": self.job.facts,
                "world_size": s.size, "strategy": s.name,
                "precision": self.precision.name, "precision_reason": self.precision_reason,
                "threads": f"{torch.get_num_threads()} torch threads; {openmp_settings()}",
                "batches_per_epoch": self.job.batches_per_epoch})  # epochs on the plots' x axis (track/xunit.py)
            name = f"meta-resume-{loop.step}.json" if self.restored_from and resume else "meta.json"
            write_json(self.run_dir / name, meta)
            self.sinks.append(MetricsJSONL(self.run_dir / "metrics.jsonl", resume_step=resume_step))
            if cfg.log.tensorboard:
                from trainwell.track.tensorboard import TensorBoardSink

                self.sinks.append(TensorBoardSink(self.run_dir, purge_step=resume_step))
        if cfg.log.progress == "off" or not s.main:
            self._quiet = open(os.devnull, "w")
        self.progress = Progress(self.total, start_step=loop.step, every=cfg.log.every,
                                 live=None if cfg.log.progress == "auto" else False, stream=self._quiet)
        self.saver = ckpt.AsyncSaver() if cfg.checkpoint.async_save else None
        self.stop = StopFlag()
        for note in self.notes:
            self.progress.message(note)
        if self.restored_from:
            self.progress.message(f"resumed from {self.restored_from} at step {loop.step}")
        described = s.describe(cfg, self.device)
        if described:
            self.progress.message(described)
        self.progress.message(f"precision {self.precision.name}: {self.precision_reason}")
        self.progress.message(f"run directory: {self.run_dir}")
        self.job.model.train()
        self.last_val: dict[str, float] = {}
        self.done = False  # an early-stop metric was reached
        self.window_units, self.window_start = 0, time.perf_counter()
        self.first_step_s: float | None = None

    # ------------------------------------------------------------------ the loop

    def fit(self, steps: int | None = None) -> dict[str, float]:
        """Train ``steps`` more optimizer steps (default: to the end of the run). The whole state stays
        in memory between calls, so fit(10); fit(10) ends exactly where fit(20) does. Returns the
        last step's numbers (train/loss, train/lr and whatever was logged with them)."""
        cfg, job, s, loop = self.cfg, self.job, self.strategy, self.loop
        end = self.total if steps is None else loop.step + steps
        accum = cfg.train.grad_accum
        last: dict[str, float] = {}
        with self.stop:
            while loop.step < end and not self.done:
                t0 = time.perf_counter()
                step = loop.step + 1
                lr = cfg.optim.lr * lr_factor(step - 1, self.total, cfg.schedule)
                set_lr(self.optimizer, lr)
                loss_sum, units = 0.0, 0
                for micro in range(accum):
                    batch = to_device(next(job.source), self.device)
                    with s.micro_batch(self.step_model, job.source, step, last=micro == accum - 1) as weight:
                        with self.precision.autocast():
                            out = job.objective(self.step_model, batch)
                        self.precision.backward(out.loss * weight / accum)
                    loss_sum += out.loss.item() * weight
                    units += out.processed or out.units
                loss, units, self.stop.requested = s.reduce_step(loss_sum / accum, units, self.stop.requested)
                if not math.isfinite(loss):
                    raise self.diverged("loss", loss, step)
                self.precision.unscale(self.optimizer)
                grad_norm = s.clip_grad_norm(job.model, cfg.optim.grad_clip, need=step % cfg.log.every == 0,
                                             step=step)
                if grad_norm is not None and not math.isfinite(grad_norm) and self.precision.scaler is None:
                    raise self.diverged("gradient norm", grad_norm, step)
                self.precision.step(self.optimizer)
                self.optimizer.zero_grad(set_to_none=True)

                loop.step, loop.units_seen = step, loop.units_seen + units
                loop.train_seconds += time.perf_counter() - t0
                last = self.log_step(step, loss, lr, units, grad_norm, out.metrics)
                evaluated = self.maybe_evaluate(step)
                self.maybe_save(step, evaluated)
        return last

    # ------------------------------------------------------------------ the named pieces of a step

    def log_step(self, step: int, loss: float, lr: float, units: int, grad_norm: float | None,
                 metrics: dict[str, Any]) -> dict[str, float]:
        cfg, job = self.cfg, self.job
        self.window_units += units
        if self.first_step_s is None:
            self.first_step_s = time.perf_counter() - self.t_start
        values: dict[str, float] = {"train/loss": loss, "train/lr": lr}
        if step % cfg.log.every and step != self.total:
            self.progress.update(step, {})  # keeps the bar moving and the ETA measured from step 1
            return values
        now = time.perf_counter()
        rate = self.window_units / max(now - self.window_start, 1e-9)
        self.window_units, self.window_start = 0, now
        values[f"train/{job.units}_per_s"] = rate
        if grad_norm is not None:
            values["train/grad_norm"] = grad_norm
        if self.peak is not None:
            values["train/mfu"] = self.peak.mfu(job.flops_per_unit * rate)  # re-probes when training beats it
        values.update(self.strategy.mean({f"train/{k}": float(v.detach() if isinstance(v, torch.Tensor) else v)
                                          for k, v in metrics.items()}))
        if job.train_metrics is not None:
            values.update(job.train_metrics())
        for sink in self.sinks:
            sink.log(step, values)
        self.progress.update(step, values)
        return values

    def maybe_evaluate(self, step: int) -> dict[str, float] | None:
        """Evaluate every eval.every steps and at the end; returns the metrics if it did."""
        cfg = self.cfg
        if not ((cfg.eval.every and step % cfg.eval.every == 0) or step == self.total):
            return None
        self.last_val = metrics = self.strategy.evaluate(self.job, self.device, self.precision.autocast)
        score = self.best_score(metrics)
        if score is not None and (self.loop.best_val is None or score < self.loop.best_val):
            self.loop.best_val, self.loop.best_step = score, step
        for sink in self.sinks:
            sink.log(step, metrics)
        if self.job.eval_samples is not None and self.strategy.main:  # e.g. completions of held-out prompts
            texts = self.job.eval_samples(self.job.model)
            folder = self.run_dir / "samples"
            folder.mkdir(exist_ok=True)
            (folder / f"step-{step}.txt").write_text("".join(f"--- sample {i + 1} ---\n{t}\n" for i, t in
                                                             enumerate(texts)), encoding="utf-8")
        self.progress.message("step {}: {}".format(step, ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())))
        self.window_start = time.perf_counter()  # evaluation is not training throughput
        return metrics

    def maybe_save(self, step: int, evaluated: dict[str, float] | None) -> None:
        """Checkpoint every checkpoint.every steps, at the end, on a stop request and on early stop."""
        cfg = self.cfg
        solved = evaluated is not None and reached(cfg, evaluated)
        if step % cfg.checkpoint.every == 0 or step == self.total or self.stop.requested or solved:
            self.save(step, evaluated)
            self.window_start = time.perf_counter()
        if solved:
            self.progress.message(f"{cfg.eval.stop_metric} reached {cfg.eval.stop_at} at step {step}; stopping")
            self.done = True
        if self.stop.requested:
            raise Interrupted(f"interrupted at step {step}; a checkpoint was saved — continue "
                              f"with `trainwell train --resume {self.run_dir}`.")

    def save(self, step: int, evaluated: dict[str, float] | None = None) -> Path:
        """A checkpoint of the whole state; ``evaluated``: this step's evaluation, for keep_best."""
        cfg = self.cfg
        evaluated = evaluated or {}
        meta = {"config_hash": config_hash(cfg), "config": trajectory_items(cfg),
                "val_loss": evaluated.get("val/loss"), "score": self.best_score(evaluated),
                "train_seconds": self.loop.train_seconds}
        target = self.run_dir / "checkpoints" / f"step-{step}"
        self.strategy.save(target, self.app_state, step=step, meta=meta, saver=self.saver)
        if self.strategy.main and self.saver is None:  # async: pruned once the writes are done
            self.prune()
        return target

    def prune(self) -> None:
        c = self.cfg.checkpoint
        ckpt.prune(self.run_dir / "checkpoints", keep_last=c.keep, keep_best=c.keep_best, best_key="score")

    def best_score(self, metrics: dict[str, float]) -> float | None:
        """The job's best-checkpoint metric as lower-is-better (val/loss as is, val/return negated)."""
        value = metrics.get(self.job.best_metric)
        if value is None:
            return None
        return value if self.job.best_mode == "min" else -value

    def diverged(self, what: str, value: float, step: int) -> TrainingDiverged:
        good, _ = ckpt.latest_valid(self.run_dir / "checkpoints")
        where = f"the last good checkpoint is {good}" if good else "no checkpoint had been written yet"
        return TrainingDiverged(f"the {what} became {value} at step {step}, so training stopped before "
                                f"updating the weights; {where}. Lower optim.lr, keep optim.grad_clip > 0, "
                                f"or try train.precision = 'fp32'.")

    # ------------------------------------------------------------------ the end of a run

    def finish(self) -> RunResult:
        """Samples, plots and the summary a person reads at the end (written by the main process)."""
        from trainwell.engine.summary import write_summary

        if self.saver is not None:
            self.saver.wait()
            if self.strategy.main:
                self.prune()
        if not self.last_val:  # resumed a run that had already finished, or fit() never evaluated
            self.last_val = self.strategy.evaluate(self.job, self.device, self.precision.autocast)
        if not self.strategy.main:
            return RunResult(run_dir=self.run_dir, summary={}, samples=[])
        exported = self.adapted.export(self.run_dir / "adapter", base_model=self.cfg.train.init_from)
        if exported is not None:
            self.job.facts["adapter_dir"] = str(exported)
        job = self.job
        model = job.model
        if job.sample is not None or job.finish is not None:
            model = self.strategy.final_model(
                job, rebuild=lambda: self.build(self.cfg, self.device).model,
                path=lambda: newest_valid(self.run_dir / "checkpoints", "the run saved none."))
        summary, samples = write_summary(self.cfg, self.run_dir, job, model, self.loop, self.last_val,
                                         first_step_s=self.first_step_s,
                                         wall_s=time.perf_counter() - self.t_start)
        return RunResult(run_dir=self.run_dir, summary=summary, samples=samples)

    def close(self, error: BaseException | None = None) -> None:
        """Stop background writes, close the sinks and leave the process group (idempotent).

        ``error``: the exception the run is failing with (its traceback's frames hold the model).
        With several processes the model, its wrapper and the optimizer are released first: they
        hold the process group, which must be destroyed (its threads joined) before the
        interpreter exits (see distributed/world.py, teardown); they are unusable without it anyway.
        """
        try:
            if self.saver is not None:
                self.saver.close()
                self.saver = None
        finally:
            if self.progress is not None:
                self.progress.close()
                self.progress = None
            if self._quiet is not None:
                self._quiet.close()
                self._quiet = None
            for sink in self.sinks:
                sink.close()
            self.sinks = []
            if self.strategy.size > 1:
                for name in ("step_model", "optimizer", "app_state", "adapted", "job"):
                    self.__dict__.pop(name, None)
            self.strategy.close(error)

    def __enter__(self) -> "Trainer":
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.close(exc)

    @property
    def model(self) -> torch.nn.Module:
        """The plain model being trained (its state_dict is what checkpoints hold)."""
        return self.job.model


# ---------------------------------------------------------------------------- helpers


def pick_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device = 'cuda' but no CUDA GPU is visible; use 'auto' or 'cpu'.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


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
        self._old = {}
