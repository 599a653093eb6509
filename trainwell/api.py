"""The Python entry points, for notebooks and scripts (the CLI calls the same functions).

    from trainwell import train, generate, evaluate
    result = train("default", ["train.steps=200"])
    print(result.summary["val_loss"], result.samples[0])

Thin callers of the Trainer (trainwell/engine/trainer.py) and the paradigms' Job builders.
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any, Sequence

from trainwell.config import load_config
from trainwell.config.schema import Config
from trainwell.errors import ConfigError, TrainwellError


def trainer(recipe: str | Config = "default", overrides: Sequence[str] = (), *, run_dir: str | Path | None = None,
            resume: str | Path | None = None, branch_from: str | Path | None = None,
            chain: tuple[str, ...] = ()) -> Any:
    """A built :class:`~trainwell.engine.trainer.Trainer` for a recipe: call ``.fit(n)`` as often as
    needed (the state stays in memory), then ``.finish()`` and ``.close()`` (or use it in a ``with``).
    Starting points named ``recipe:NAME`` are trained first (paradigms/stages.py; ``chain``: the stages
    being trained for this one)."""
    from trainwell.engine.state import has_checkpoints
    from trainwell.engine.trainer import Trainer
    from trainwell.paradigms import build_job

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and resume is None:  # started by torchrun with several processes
        if run_dir is None:
            raise ConfigError("several processes must write to the same run directory: pass --run-dir "
                              "(`trainwell train --nproc N` picks one for you).")
        if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 and has_checkpoints(Path(run_dir)):
            resume = run_dir  # torchrun restarted the group after a failure: continue where it stopped
    cfg, target, name = resolve(recipe, overrides, run_dir, resume, chain)
    if cfg.federated.silos:
        raise ConfigError("a federated run (federated.silos > 0) has no single Trainer: train it with "
                          "trainwell.train() or `trainwell train`; each silo runs its own.")
    return Trainer(cfg, target, build_job, resume=resume is not None,
                   branch_from=Path(branch_from) if branch_from else None, recipe_name=name)


def resolve(recipe: str | Config, overrides: Sequence[str], run_dir: str | Path | None,
            resume: str | Path | None, chain: tuple[str, ...] = ()) -> tuple[Config, Path, str]:
    """(config, run directory, run name) of a new run, or of the run in ``resume`` to continue; a new
    run's starting points named ``recipe:NAME`` are trained first (paradigms/stages.py)."""
    from trainwell.engine.state import new_run_dir
    from trainwell.inference import run_config
    from trainwell.paradigms.stages import resolve_starting_points

    if resume is not None:
        return run_config(Path(resume), overrides), Path(resume), Path(resume).name
    cfg = recipe if isinstance(recipe, Config) else load_config(recipe, list(overrides))
    cfg = resolve_starting_points(cfg, train, chain)
    name = cfg.run.name or (Path(recipe).stem if isinstance(recipe, str) else "run")
    return cfg, new_run_dir(cfg, str(run_dir) if run_dir else None, name), name


def is_federated(recipe: str | Config, overrides: Sequence[str], resume: str | Path | None) -> bool:
    from trainwell.inference import run_config

    if resume is not None:
        return bool(run_config(Path(resume), overrides).federated.silos)
    cfg = recipe if isinstance(recipe, Config) else load_config(recipe, list(overrides))
    return bool(cfg.federated.silos)


def train(recipe: str | Config = "default", overrides: Sequence[str] = (), *, run_dir: str | Path | None = None,
          resume: str | Path | None = None, branch_from: str | Path | None = None, chain: tuple[str, ...] = ()) -> Any:
    """Train a recipe (name, .toml path or a Config) and return a RunResult (run_dir, summary, samples).
    With federated.silos > 0 the recipe trains federated, in Flower's simulation runtime."""
    if is_federated(recipe, overrides, resume):
        from trainwell.engine.trainer import RunResult
        from trainwell.federated.simulate import run as simulate

        if branch_from is not None:
            raise ConfigError("--from (branching from a checkpoint) is not supported for federated runs; "
                              "use train.init_from to start the global model from a checkpoint.")
        cfg, target, _ = resolve(recipe, overrides, run_dir, resume)
        summary = simulate(cfg, target)
        return RunResult(run_dir=target, summary=summary, samples=summary.pop("samples", []))
    with trainer(recipe, overrides, run_dir=run_dir, resume=resume, branch_from=branch_from, chain=chain) as t:
        return fit_and_finish(t, None)


def fit_and_finish(t: Any, steps: int | None) -> Any:
    """Train and write the results; an exception no check anticipated gets its traceback kept in the
    run directory (error.log) and becomes one sentence."""
    from trainwell.errors import unexpected

    try:
        t.fit(steps)
        return t.finish()
    except TrainwellError:
        raise
    except Exception as e:
        raise unexpected(e, "training", t.run_dir) from e


def fit(model: Any, data: Any, objective: Any, *, eval_data: Any = None,
        config: Config | Sequence[str] | dict[str, Any] = (), run_dir: str | Path | None = None,
        resume: bool = False, steps: int | None = None) -> Any:
    """Train your own ``nn.Module`` on your own data with your own loss, with everything a recipe gets
    (checkpoints, exact resume, metrics, plots, DDP/FSDP under torchrun); returns a RunResult.

    ``data``: a map-style ``torch.utils.data.Dataset`` (items: dicts of tensors, ``(input, target)``
    pairs or tensors) or an iterator of dict batches with ``state_dict``/``load_state_dict``.
    ``objective(model, batch)`` returns a scalar loss tensor (or a ``LossOutput``). ``config``: ``--set``
    style overrides (``["train.steps=200"]`` or ``{"train.steps": 200}``) of the training settings,
    or a Config. ``resume=True`` continues the run in ``run_dir`` from its newest checkpoint.
    """
    from trainwell.engine.state import new_run_dir
    from trainwell.engine.trainer import Trainer
    from trainwell.paradigms.custom import object_builder

    if resume and run_dir is None:
        raise ConfigError("trainwell.fit(resume=True) needs the run_dir of the run to continue.")
    cfg = fit_config(model, data, objective, config)
    build = object_builder(model, data, objective, eval_data)
    target = Path(run_dir) if resume else new_run_dir(cfg, str(run_dir) if run_dir else None, cfg.run.name or "fit")
    with Trainer(cfg, target, build, resume=resume, recipe_name="fit") as t:
        return fit_and_finish(t, steps)


def fit_config(model: Any, data: Any, objective: Any, config: Config | Sequence[str] | dict[str, Any]) -> Config:
    """The Config of a trainwell.fit() run: the given settings, and the objects' types as data, model
    and objective (recorded in every checkpoint, so a resume with other objects is refused)."""
    if isinstance(config, Config):
        cfg = config
    else:
        items = [f"{k}={_toml_value(v)}" for k, v in config.items()] if isinstance(config, dict) else list(config)
        cfg = load_config(text="[data]\nname = 'python'\n[model]\nname = 'python'\n[objective]\nname = 'python'\n",
                          overrides=items)
    for section, obj in (("data", data), ("model", model), ("objective", objective)):
        part = getattr(cfg, section)
        if getattr(part, "name", None) != "python":
            raise ConfigError(f"trainwell.fit() takes the {section} as an object; remove {section}.* from its config.")
        kind = obj if inspect.isfunction(obj) or inspect.ismethod(obj) or inspect.isclass(obj) else type(obj)
        part.type = f"{kind.__module__}.{kind.__qualname__}"
    return cfg


def _toml_value(value: Any) -> str:
    import tomli_w

    return tomli_w.dumps({"v": value})[4:].strip()


def launch_group(nproc: int, recipe: str, overrides: Sequence[str] = (), *, run_dir: str | Path | None = None,
                 resume: str | Path | None = None, branch_from: str | Path | None = None,
                 max_restarts: int = 0) -> Path:
    """Train with ``nproc`` local processes through torchrun; returns the run directory."""
    from trainwell.distributed.launch import launch
    from trainwell.distributed.world import check
    from trainwell.engine.state import new_run_dir

    sets = [a for o in overrides for a in ("--set", o)]
    if is_federated(recipe, overrides, resume):
        raise ConfigError("--nproc does not apply to a federated run (federated.silos > 0): each silo trains in "
                          "its own process; drop --nproc.")
    if resume is not None:
        target, args = Path(resume), ["--resume", str(resume), *sets]
    else:  # validate the recipe and pick the one run directory all ranks (and restarts) share
        cfg = load_config(recipe, list(overrides))
        check(cfg)
        name = cfg.run.name or Path(recipe).stem
        target = new_run_dir(cfg, str(run_dir) if run_dir else None, name)
        args = [recipe, "--run-dir", str(target), *sets]
        if branch_from is not None:
            args += ["--from", str(branch_from)]
    code = launch(nproc, args, max_restarts=max_restarts)
    if code != 0:
        raise TrainwellError(f"the {nproc} training processes failed (torchrun exit status {code}); the "
                             f"first error is printed above. Continue with `trainwell train --nproc {nproc} "
                             f"--resume {target}` once it is fixed.")
    return target


def plan(recipe: str | Config = "default", overrides: Sequence[str] = (), *, nproc: int = 1) -> Any:
    """The memory and time plan of a recipe (a :class:`~trainwell.engine.plan.Plan`), trained on
    ``nproc`` processes: its step simulated on fake tensors, nothing trained, no run directory."""
    from trainwell.engine.plan import plan_run
    from trainwell.engine.trainer import pick_device
    from trainwell.paradigms import build_job

    cfg = recipe if isinstance(recipe, Config) else load_config(recipe, list(overrides))
    return plan_run(cfg, build_job, pick_device(cfg.train.device), world_size=nproc)


def generate(run_dir: str | Path, prompt: str = "def ", **kw: Any) -> dict[str, Any]:
    """Sample from a run's newest valid checkpoint (or ``checkpoint=``); see the CLI's options."""
    from trainwell.inference import generate as run_generate

    return run_generate(Path(run_dir), prompt, **kw)


def evaluate(run_dir: str | Path, checkpoint: str | None = None, merge: bool = False) -> dict[str, Any]:
    """Validation metrics of a run's checkpoint."""
    from trainwell.inference import eval_checkpoint

    return eval_checkpoint(Path(run_dir), checkpoint, merge=merge)
