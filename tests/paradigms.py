"""One tiny run of each paradigm, trained in-process at most once per test session (the
``paradigm_run`` fixture in conftest.py), with every matplotlib figure it saves kept for the
tests to inspect: the plot tests check the figures themselves, not just the PNG files."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

from tinyrun import tiny_sets

# fp32: "auto" would pick bf16 on some CPUs and fp32 on others, and tests must not depend on the CPU
_QUIET = ["log.progress='off'", "log.tensorboard=false", "train.threads=1", "train.precision='fp32'"]
_RL = ["eval.stop_metric=''", "data.eval_episodes=2"]


def recipes(text_path: Path) -> dict[str, tuple[str, list[str]]]:
    """name -> (recipe, --set values): each trains in about a second on one CPU core."""
    text = dict(train__steps=30, log__every=1, log__progress="off", log__tensorboard=False)
    return {
        "gpt": ("default", tiny_sets(text_path, **text)),
        "mlm": ("code_mlm", tiny_sets(text_path, eval__samples=0, **text)),
        "cnn": ("digits_cnn", _QUIET + ["train.epochs=1", "log.every=1", "eval.every=10",
                                        "checkpoint.every=100"]),
        "mlp": ("diabetes_mlp", _QUIET + ["train.epochs=3", "log.every=1", "eval.every=10",
                                          "checkpoint.every=100"]),
        "simclr": ("digits_cluster", _QUIET + ["train.epochs=0", "train.steps=6", "train.batch_size=32",
                                               "model.channels=[8]", "model.embed_dim=16", "model.proj_dim=8",
                                               "eval.every=3", "checkpoint.every=100", "log.every=1"]),
        "flow": ("digits_density", _QUIET + ["model.couplings=2", "model.hidden=16", "model.depth=1",
                                             "objective.gmm_components=[1, 2]", "objective.samples=4",
                                             "train.epochs=1", "train.batch_size=128", "eval.every=5",
                                             "checkpoint.every=5", "log.every=1"]),
        "ppo": ("cartpole_ppo", _QUIET + _RL + ["data.total_env_steps=2000", "eval.every=40",
                                                "checkpoint.every=200", "log.every=10"]),
        "dqn": ("cartpole_dqn", _QUIET + _RL + ["data.total_env_steps=1500", "data.learning_starts=200",
                                                "data.collect_steps=100", "data.updates_per_collect=20",
                                                "eval.every=100", "checkpoint.every=300", "model.hidden=[32,32]",
                                                "log.every=10", "data.video=false"]),  # the PPO run has the GIF
    }


@dataclass
class Run:
    name: str
    run_dir: Path
    figures: dict[str, Any] = field(default_factory=dict)  # PNG file name -> the Figure saved to it


@contextmanager
def recording_figures(into: dict[str, Any]) -> Iterator[None]:
    """Keep every Figure that is saved as a PNG, by file name ("loss.png"; ".tmp" dropped)."""
    from matplotlib.figure import Figure

    original = Figure.savefig

    def savefig(self: Any, fname: Any, *args: Any, **kwargs: Any) -> Any:
        name = Path(str(fname)).name.removesuffix(".tmp")
        into[name] = self
        return original(self, fname, *args, **kwargs)

    with mock.patch.object(Figure, "savefig", savefig):
        yield


def train(name: str, text_path: Path, root: Path) -> Run:
    import trainwell

    recipe, sets = recipes(text_path)[name]
    run = Run(name, root / name)
    with recording_figures(run.figures):
        trainwell.train(recipe, sets, run_dir=run.run_dir)
    return run
