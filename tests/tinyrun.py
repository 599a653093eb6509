"""The tiny text-training setup shared by tests (a module, not conftest: several conftest.py files
exist, so `from conftest import ...` would depend on which one pytest imported first)."""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path


def run_cli_here(*args: str) -> "subprocess.CompletedProcess[str]":
    """The CLI in this process (no interpreter start: ~3 s less): for commands that stop before they
    train, and the exact-resume reference runs (compared bit for bit with the CLI's processes). Only what reaches the user counts: the exit status and the two streams; an exception that
    escaped the CLI's own handling fails the test instead of passing as a non-zero exit."""
    from typer.testing import CliRunner

    from trainwell.cli import app

    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return subprocess.CompletedProcess(args, result.exit_code, result.stdout, result.stderr)


def needs(*modules: str):
    """A skip mark for tests that need optional packages, checked without importing them: a module-level
    ``pytest.importorskip`` imports the package in every worker while it collects (peft alone takes
    ~5 s to import: torchao, bitsandbytes and torch._dynamo)."""
    import pytest

    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    return pytest.mark.skipif(bool(missing), reason=f"needs {', '.join(missing)}")


# The memory check (train.memory_check: a simulated step before the real one) costs ~0.8 s of CPU per
# tiny run, a tenth of the suite; the tiny setups leave it off. Where it runs: the tests of the plan
# (tests/engine/test_plan.py, tests/config/test_fuzz.py), every SIGKILL exact-resume case, the
# multi-process runs, and every test whose own settings do not come from here.
NO_PLAN = {"train.memory_check": False}


def tiny_sets(text_path: Path, **extra: object) -> list[str]:
    """--set overrides that shrink the default recipe to a ~1 s CPU run."""
    values: dict[str, object] = {
        "data.source": "file", "data.path": str(text_path), "data.context": 32, "data.val_fraction": 0.1,
        "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32,
        "train.steps": 20, "train.batch_size": 8, "train.precision": "fp32", "train.threads": 1,
        "schedule.warmup_steps": 5, "eval.every": 10, "eval.batches": 2, "eval.samples": 1,
        "eval.sample_tokens": 16, "checkpoint.every": 5, "log.every": 5, "log.progress": "lines",
        **NO_PLAN,
    }
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v!r}" if isinstance(v, str) else f"{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in values.items()]


# the shipped recipe of each preference stage
STAGES = {"sft": "code_sft", "reward": "code_reward", "dpo": "code_dpo", "ppo": "code_ppo", "grpo": "code_grpo",
          "online_dpo": "code_online_dpo"}
DATA = {"sft": "sft", "reward": "pairs", "dpo": "pairs", "ppo": "prompts", "grpo": "prompts", "online_dpo": "prompts"}


def pref_rows(text_path: Path, folder: Path) -> dict[str, Path]:
    """Tiny JSONL files in TRL's formats from a text's lines: prompt = a line's first 10 characters,
    completion (chosen) = the next 12, rejected = those 12 with their letters' case swapped."""
    import json
    import random

    rng = random.Random(0)
    lines = [line for line in text_path.read_text(encoding="utf-8").splitlines() if 24 < len(line) < 80]
    rows = [(line[:10], line[10:22]) for line in rng.sample(lines, 240)]
    files = {"sft": [{"prompt": p, "completion": c} for p, c in rows],
             "pairs": [{"prompt": p, "chosen": c, "rejected": c.swapcase()} for p, c in rows],
             "prompts": [{"prompt": p, "reference": c} for p, c in rows]}
    out = {}
    for name, items in files.items():
        out[name] = folder / f"{name}.jsonl"
        out[name].write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return out


def pref_sets(data: dict[str, Path], init_from: Path, stage: str, **extra: object) -> list[str]:
    """--set overrides that shrink a preference recipe (STAGES) to a ~1 s CPU run on the tiny rows."""
    values: dict[str, object] = {
        "data.path": str(data[DATA[stage]]), "data.eval_fraction": 0.2, "data.context": 32,
        "data.max_new_tokens": 8, "data.eval_samples": 2,
        "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32, "train.init_from": str(init_from),
        "train.steps": 20, "train.batch_size": 8, "train.threads": 1, "schedule.warmup_steps": 2,
        "eval.every": 10, "eval.batches": 2, "eval.samples": 1, "eval.sample_tokens": 8, "eval.prompt": "def ",
        "checkpoint.every": 10, "log.every": 5, "log.progress": "lines", "log.plots": False,
        "log.tensorboard": False, **NO_PLAN,
    }
    if DATA[stage] == "prompts":
        values.update({"data.prompts_per_rollout": 4, "data.group_size": 1 if stage == "ppo" else 2,
                       "data.eval_prompts": 8, "data.minibatch_size": 0, "data.update_epochs": 1})
    extra = {k.replace("__", "."): v for k, v in extra.items()}
    if extra.get("model.name", "gpt") != "gpt":  # another model: the GPT's size keys do not apply
        values = {k: v for k, v in values.items() if not k.startswith("model.")}
    values.update(extra)
    return sets_list(values)


def sets_list(values: dict[str, object]) -> list[str]:
    import json

    return [f"{k}={json.dumps(v) if isinstance(v, (str, list)) else str(v).lower() if isinstance(v, bool) else v}"
            for k, v in values.items()]
