"""The Python entry points, for notebooks and scripts (the CLI calls the same functions).

    from trainwell import train, generate, evaluate
    result = train("default", ["train.steps=200"])
    print(result.summary["val_loss"], result.samples[0])
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from trainwell.config import load_config
from trainwell.config.schema import Config


def train(recipe: str | Config = "default", overrides: Sequence[str] = (), *, run_dir: str | Path | None = None,
          resume: str | Path | None = None, branch_from: str | Path | None = None) -> Any:
    """Train a recipe (name, .toml path or a Config) and return a RunResult (run_dir, summary, samples)."""
    from trainwell.engine.inference import run_config
    from trainwell.engine.loop import train as run_training
    from trainwell.engine.state import new_run_dir

    if resume is not None:
        cfg, target, name = run_config(Path(resume), overrides), Path(resume), Path(resume).name
    else:
        cfg = recipe if isinstance(recipe, Config) else load_config(recipe, list(overrides))
        name = cfg.run.name or (Path(recipe).stem if isinstance(recipe, str) else "run")
        target = new_run_dir(cfg, str(run_dir) if run_dir else None, name)
    return run_training(cfg, target, resume=resume is not None,
                        branch_from=Path(branch_from) if branch_from else None, recipe_name=name)


def generate(run_dir: str | Path, prompt: str = "def ", **kw: Any) -> dict[str, Any]:
    """Sample from a run's newest valid checkpoint (or ``checkpoint=``); see the CLI's options."""
    from trainwell.engine.inference import generate as run_generate

    return run_generate(Path(run_dir), prompt, **kw)


def evaluate(run_dir: str | Path, checkpoint: str | None = None, merge: bool = False) -> dict[str, Any]:
    """Validation metrics of a run's checkpoint."""
    from trainwell.engine.inference import eval_checkpoint

    return eval_checkpoint(Path(run_dir), checkpoint, merge=merge)
