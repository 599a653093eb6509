"""The Python entry points, for notebooks and scripts (the CLI calls the same functions).

    from trainwell import train, generate, evaluate
    result = train("default", ["train.steps=200"])
    print(result.summary["val_loss"], result.samples[0])
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

from trainwell.config import load_config
from trainwell.config.schema import Config
from trainwell.errors import ConfigError, TrainwellError


def train(recipe: str | Config = "default", overrides: Sequence[str] = (), *, run_dir: str | Path | None = None,
          resume: str | Path | None = None, branch_from: str | Path | None = None) -> Any:
    """Train a recipe (name, .toml path or a Config) and return a RunResult (run_dir, summary, samples)."""
    from trainwell.engine.inference import run_config
    from trainwell.engine.loop import train as run_training
    from trainwell.engine.state import has_checkpoints, new_run_dir

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and resume is None:  # started by torchrun with several processes
        if run_dir is None:
            raise ConfigError("several processes must write to the same run directory: pass --run-dir "
                              "(`trainwell train --nproc N` picks one for you).")
        if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 and has_checkpoints(Path(run_dir)):
            resume = run_dir  # torchrun restarted the group after a failure: continue where it stopped
    if resume is not None:
        cfg, target, name = run_config(Path(resume), overrides), Path(resume), Path(resume).name
    else:
        cfg = recipe if isinstance(recipe, Config) else load_config(recipe, list(overrides))
        name = cfg.run.name or (Path(recipe).stem if isinstance(recipe, str) else "run")
        target = new_run_dir(cfg, str(run_dir) if run_dir else None, name)
    return run_training(cfg, target, resume=resume is not None,
                        branch_from=Path(branch_from) if branch_from else None, recipe_name=name)


def launch_group(nproc: int, recipe: str, overrides: Sequence[str] = (), *, run_dir: str | Path | None = None,
                 resume: str | Path | None = None, branch_from: str | Path | None = None,
                 max_restarts: int = 0) -> Path:
    """Train with ``nproc`` local processes through torchrun; returns the run directory."""
    from trainwell.distributed.launch import launch
    from trainwell.distributed.world import check
    from trainwell.engine.state import new_run_dir

    sets = [a for o in overrides for a in ("--set", o)]
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


def generate(run_dir: str | Path, prompt: str = "def ", **kw: Any) -> dict[str, Any]:
    """Sample from a run's newest valid checkpoint (or ``checkpoint=``); see the CLI's options."""
    from trainwell.engine.inference import generate as run_generate

    return run_generate(Path(run_dir), prompt, **kw)


def evaluate(run_dir: str | Path, checkpoint: str | None = None) -> dict[str, Any]:
    """Validation metrics of a run's checkpoint."""
    from trainwell.engine.inference import eval_checkpoint

    return eval_checkpoint(Path(run_dir), checkpoint)
