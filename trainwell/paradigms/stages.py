"""Where a run starts from: a checkpoint, a run directory, or an earlier stage named by its recipe.

A chain of post-training stages (pretrain -> SFT -> reward model -> PPO ...) names each starting
point in the recipe itself, so every shipped recipe runs as shipped:

    train.init_from = "recipe:code_sft"          # the code_sft run in <run.dir>/code_sft
    objective.reward_model = "recipe:code_reward"

``recipe:NAME`` (a shipped recipe or a .toml path) means that recipe's run in ``<run.dir>/<name>``:
used as it is when it has finished (summary.json), resumed when it was interrupted, trained first
(with the same loop, as `trainwell train NAME --run-dir <run.dir>/<name>` would) when it is not
there. A run directory means its newest valid checkpoint. The resolved checkpoint path is what the
run's config records, so a resume never trains or picks anything again.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from trainwell.config.schema import Config
from trainwell.errors import ConfigError

KEYS = (("train", "init_from"), ("objective", "reward_model"))
Run = Callable[..., object]  # run(recipe, run_dir=..., resume=...) trains a stage to its end


def resolve_starting_points(cfg: Config, run: Run, chain: tuple[str, ...] = ()) -> Config:
    """Replace ``recipe:NAME`` and run directories in cfg's starting-point keys by checkpoint paths."""
    for section, key in KEYS:
        part = getattr(cfg, section)
        value = getattr(part, key, None)
        if value:
            setattr(part, key, checkpoint_for(value, f"{section}.{key}", cfg.run.dir, run, chain))
    return cfg


def checkpoint_for(value: str, key: str, runs: str, run: Run, chain: tuple[str, ...]) -> str:
    from trainwell.engine.restore import newest_valid

    if value.startswith("recipe:"):
        recipe = value[len("recipe:"):]
        if recipe in chain:
            raise ConfigError(f"{key} = {value!r}: the stages start from each other in a loop ({' -> '.join(chain + (recipe,))}).")
        folder = Path(runs) / Path(recipe).stem
        if not (folder / "summary.json").is_file():
            started = (folder / "checkpoints").is_dir() and any((folder / "checkpoints").iterdir())
            what = "continuing it" if started else "training it first"
            print(f"{key} = {value}: {what} in {folder} (`trainwell train {recipe} --run-dir {folder}`)",
                  file=sys.stderr)
            if started:
                run(recipe, run_dir=folder, resume=folder, chain=chain + (recipe,))
            else:
                run(recipe, run_dir=folder, resume=None, chain=chain + (recipe,))
        return str(newest_valid(folder / "checkpoints", f"the stage {recipe} left no checkpoint.").resolve())
    path = Path(value).expanduser()
    if not (path / "manifest.json").is_file() and (path / "checkpoints").is_dir():  # a run directory
        return str(newest_valid(path / "checkpoints", f"{key} = {value} names a run without a checkpoint.").resolve())
    return value
