"""Shared fixtures: a private token cache and a tiny real-text training setup."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

# Every test (and every subprocess a test starts) uses a private cache, never ~/.cache.
os.environ.setdefault("TRAINWELL_CACHE", tempfile.mkdtemp(prefix="trainwell-cache-"))


@pytest.fixture(scope="session")
def tiny_text(tmp_path_factory) -> Path:
    """~40 KB of real text: a few standard-library modules' source."""
    import textwrap
    import shlex
    import string

    text = "".join(Path(m.__file__).read_text(encoding="utf-8") for m in (textwrap, shlex, string))
    path = tmp_path_factory.mktemp("data") / "tiny.txt"
    path.write_text(text, encoding="utf-8")
    return path


def tiny_sets(text_path: Path, **extra: object) -> list[str]:
    """--set overrides that shrink the default recipe to a ~1 s CPU run."""
    values: dict[str, object] = {
        "data.source": "file", "data.path": str(text_path), "data.context": 32, "data.val_fraction": 0.1,
        "model.n_layer": 2, "model.n_head": 2, "model.n_embd": 32,
        "train.steps": 20, "train.batch_size": 8, "train.precision": "fp32", "train.threads": 1,
        "schedule.warmup_steps": 5, "eval.every": 10, "eval.batches": 2, "eval.samples": 1,
        "eval.sample_tokens": 16, "checkpoint.every": 5, "log.every": 5, "log.progress": "lines",
    }
    values.update({k.replace("__", "."): v for k, v in extra.items()})
    return [f"{k}={v!r}" if isinstance(v, str) else f"{k}={str(v).lower() if isinstance(v, bool) else v}"
            for k, v in values.items()]


@pytest.fixture
def tiny(tiny_text):
    return lambda **extra: tiny_sets(tiny_text, **extra)


@pytest.fixture(scope="session")
def tiny_session(tiny_text):
    """``tiny`` for session-scoped fixtures (e.g. a pretrained checkpoint shared by many tests)."""
    return lambda **extra: tiny_sets(tiny_text, **extra)


def run_cli(*args: str, timeout: float = 300, **kw) -> "subprocess.CompletedProcess[str]":
    import subprocess

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "trainwell", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, **kw)


@pytest.fixture
def cli():
    return run_cli
