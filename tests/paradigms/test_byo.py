"""Bring your own model, data and objective: defined here, in the test file itself, and trained by
import path from a recipe (byo.toml), from Python with trainwell.fit(), and with 2 DDP processes.

Exact resume after SIGKILL of both kinds of run is in tests/engine/test_exact_resume.py (cases
"byo" and "fit"); this file doubles as the script those cases start (see ``main`` at the end).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

import trainwell
from trainwell.errors import ConfigError, DataError

HERE = Path(__file__).parent
RECIPE = HERE / "byo.toml"


# --------------------------------------------------------------------------- the user's code


class Regressor(nn.Module):
    """A small MLP with dropout (so resuming must also restore the random streams)."""

    def __init__(self, features: int, width: int = 16, dropout: float = 0.1):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(features, width), nn.Tanh(), nn.Dropout(dropout), nn.Linear(width, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, F) -> (B,)
        return self.net(x).squeeze(-1)


class Waves(Dataset):
    """y = sin(x . w) + noise with a fixed unit vector w: (input, target) pairs."""

    def __init__(self, n: int, features: int = 4, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        w = torch.nn.functional.normalize(torch.randn(features, generator=torch.Generator().manual_seed(99)), dim=0)
        self.x = torch.randn(n, features, generator=g)
        self.y = torch.sin(self.x @ w) + 0.05 * torch.randn(n, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def build(section, feature_shape, **facts) -> nn.Module:
    return Regressor(feature_shape[0], width=section.width, dropout=section.dropout)


def make_data(section):
    return (Waves(section.samples, section.features, seed=section.seed),
            Waves(128, section.features, seed=section.seed + 1))


def mse_and_mae(model, batch, *, scale=1.0):
    pred = model(batch["input"])
    err = pred - batch["target"]
    return trainwell.LossOutput(loss=scale * (err ** 2).mean(), units=len(err), metrics={"mae": err.abs().mean()})


def mse(model, batch):
    return F.mse_loss(model(batch["input"]), batch["target"])


def fit_here(run_dir: str, *, steps: int = 300, resume: bool = False, dropout: float = 0.1, seed: int = 0):
    torch.manual_seed(seed)  # the user's own initialisation
    return trainwell.fit(Regressor(4, dropout=dropout), Waves(512), mse, eval_data=Waves(128, seed=1),
                         config={"train.steps": steps, "train.batch_size": 32, "train.threads": 1, "optim.lr": 3e-3,
                                 "schedule.warmup_steps": 10, "eval.every": 50, "checkpoint.every": 7,
                                 "log.plots": False, "log.tensorboard": False, "log.progress": "lines"},
                         run_dir=run_dir, resume=resume)


# --------------------------------------------------------------------------- tests


def env() -> dict[str, str]:
    """Subprocesses find this module by name, as a user's package on PYTHONPATH."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "PYTHONUNBUFFERED": "1"}


def weights(run: Path) -> dict[str, torch.Tensor]:
    from trainwell.checkpoint import load_entry

    return load_entry(max(run.glob("checkpoints/step-*"), key=lambda p: int(p.name.split("-")[1])), "model")


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    """``python ARGS``; one-process commands are forked from a process that has imported torch (tests/forked.py)."""
    import forked  # here: this file also runs as the user's script, where tests/ is not on sys.path

    if args[1:3] == ("-m", "trainwell") and "--nproc" not in args:
        done = forked.run(list(args[3:]), timeout=timeout, env=env())
    elif args[1].endswith(".py"):
        done = forked.run(list(args[2:]), script=args[1], timeout=timeout, env=env())
    else:
        done = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, env=env())
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def test_recipe_with_import_paths_trains_the_users_model(tmp_path):
    res = trainwell.train(str(RECIPE), ["train.steps=120", "log.plots=false"], run_dir=tmp_path / "r")
    rows = [json.loads(line) for line in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    val = [r["val/loss"] for r in rows if "val/loss" in r]
    assert val[-1] < 0.25 * float(Waves(128, seed=1).y.var()), val  # it learns: far better than the mean
    assert "val/mae" in rows[-1] and res.summary["parameters"] == 4 * 16 + 16 + 16 + 1
    assert res.summary["model_type"] == "test_byo.Regressor"
    # the section's extra keys round-trip through config.toml (resume and eval read it back)
    assert "width = 16" in (tmp_path / "r" / "config.toml").read_text()
    assert trainwell.evaluate(tmp_path / "r")["val/loss"] == pytest.approx(res.summary["val_loss"], abs=1e-4)


def test_fit_with_python_objects_learns_records_types_and_refuses_other_objects(tmp_path):
    res = fit_here(str(tmp_path / "f"), steps=60)
    assert res.summary["steps"] == 60 and res.summary["val_loss"] < 0.5 * float(Waves(128, seed=1).y.var())
    cfg = trainwell.load_config(str(tmp_path / "f" / "config.toml"))
    assert (cfg.model.type, cfg.data.type, cfg.objective.type) == ("test_byo.Regressor", "test_byo.Waves",
                                                                  "test_byo.mse")
    again = fit_here(str(tmp_path / "f"), steps=60, resume=True)  # already finished: nothing more to do
    assert again.summary["steps"] == 60 and again.summary["val_loss"] == res.summary["val_loss"]
    from trainwell.errors import CheckpointError

    with pytest.raises(CheckpointError, match="different config.*train.steps"):
        fit_here(str(tmp_path / "f"), steps=90, resume=True)
    with pytest.raises(CheckpointError, match="objective.type"):
        trainwell.fit(Regressor(4), Waves(512), mse_and_mae, run_dir=tmp_path / "f", resume=True,
                      config={"train.steps": 60, "train.batch_size": 32, "train.threads": 1, "optim.lr": 3e-3,
                              "schedule.warmup_steps": 10})
    with pytest.raises(ConfigError, match="recipe cannot rebuild"):
        trainwell.train(resume=tmp_path / "f")


def test_bad_import_paths_and_objects_get_one_clear_sentence(tmp_path, cli_here, monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))
    for n, (sets, want) in enumerate([(["model.name='nosuch_pkg.nets:build'"], "no module named 'nosuch_pkg'"),
                                      (["model.name='test_byo:biuld'"], "module 'test_byo' has no 'biuld'"),
                                      (["objective.name='test_byo:HERE'"], "names a PosixPath, not a function"),
                                      (["data.name='test_byo'"], "is not known")]):
        args = ["train", str(RECIPE), "--run-dir", str(tmp_path / "x"), *[a for s in sets for a in ("--set", s)]]
        if n == 0:  # a real process once; the others in this one (tests/conftest.py, run_cli_here)
            done = subprocess.run([sys.executable, "-m", "trainwell", *args], capture_output=True, text=True,
                                  timeout=120, env=env())
        else:
            done = cli_here(*args)
        assert done.returncode == 2 and want in done.stderr and "Traceback" not in done.stderr, done.stderr
    from torch.utils.data import DataLoader

    with pytest.raises(DataError, match="not a DataLoader"):
        trainwell.fit(Regressor(4), DataLoader(Waves(8)), mse, run_dir=tmp_path / "a")
    with pytest.raises(DataError, match="empty"):
        trainwell.fit(Regressor(4), Waves(0), mse, run_dir=tmp_path / "b")
    with pytest.raises(ConfigError, match="scalar loss tensor"):
        trainwell.fit(Regressor(4), Waves(8), lambda m, b: m(b["input"]), run_dir=tmp_path / "c",
                      config=["train.steps=2"])
    with pytest.raises(ConfigError, match="nn.Module"):
        trainwell.fit(lambda x: x, Waves(8), mse, run_dir=tmp_path / "d")


@pytest.mark.slow
def test_two_ddp_processes_track_one_with_the_users_model_and_data(tmp_path):
    """The recipe (import paths) with --nproc 2, and trainwell.fit() started by torchrun, both against
    one process (no dropout: per-rank dropout streams differ by design)."""
    sets = ["--set", "train.steps=40", "--set", "model.dropout=0.0", "--set", "log.plots=false",
            "--set", "log.tensorboard=false"]
    trainwell_cmd = [sys.executable, "-m", "trainwell", "train", str(RECIPE)]
    run(*trainwell_cmd, "--run-dir", str(tmp_path / "one"), *sets)
    run(*trainwell_cmd, "--run-dir", str(tmp_path / "two"), "--nproc", "2", *sets)
    one, two = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-5
    assert len(list((tmp_path / "two" / "checkpoints").glob("step-40/shard-*"))) == 2

    script = [str(Path(__file__)), "fit", "--steps", "40", "--dropout", "0.0"]
    run(sys.executable, *script, str(tmp_path / "fit-one"))
    run(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *script,
        str(tmp_path / "fit-two"))
    one, two = weights(tmp_path / "fit-one"), weights(tmp_path / "fit-two")
    assert max(float((one[k] - two[k]).abs().max()) for k in one) < 1e-5


def main(argv: list[str]) -> None:
    """``python test_byo.py fit RUN_DIR [--resume] [--steps N] [--dropout P]``: the user's script."""
    import argparse

    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["fit"])
    p.add_argument("run_dir")
    p.add_argument("--resume", action="store_true")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--dropout", type=float, default=0.1)
    a = p.parse_args(argv)
    fit_here(a.run_dir, steps=a.steps, resume=a.resume, dropout=a.dropout)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    main(sys.argv[1:])
