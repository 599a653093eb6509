"""Shared fixtures: a private token cache and a tiny real-text training setup."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest

from tinyrun import pref_rows, pref_sets, tiny_sets  # noqa: E402  (tests/ is on sys.path: pytest puts the rootdir conftest's folder there)

# Every test (and every subprocess a test starts) uses a private cache, never ~/.cache.
os.environ.setdefault("TRAINWELL_CACHE", tempfile.mkdtemp(prefix="trainwell-cache-"))


@pytest.fixture(scope="session", autouse=True)
def _auto_precision_is_fp32_in_tests():
    """train.precision = "auto" resolves to fp32 in this process: the real probe picks bf16 on some
    CPUs (AMX) and fp32 on others (AVX2 only), and no test may depend on the CPU it runs on. Tests of
    the choice itself restore the real decision with the ``auto_precision`` fixture."""
    from trainwell.engine import precision

    _REAL_AUTO.append(precision.decide_auto)
    patch = pytest.MonkeyPatch()
    patch.setattr(precision, "decide_auto", lambda cfg, model, device: ("fp32", "auto: fp32 (the tests' fixed choice)"))
    yield
    patch.undo()


_REAL_AUTO: list = []


@pytest.fixture
def auto_precision(monkeypatch):
    """The real "auto" decision (probe, cache, margins) for this test."""
    from trainwell.engine import precision

    monkeypatch.setattr(precision, "decide_auto", _REAL_AUTO[0])


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


@pytest.fixture(scope="session")
def paradigm_run(tiny_text, tmp_path_factory):
    """``paradigm_run("ppo")``: the tiny run of that paradigm (tests/paradigms.py), trained on first use
    and shared by every test of the session, with the figures it saved."""
    import paradigms

    root = tmp_path_factory.mktemp("paradigms")
    done: dict[str, paradigms.Run] = {}

    def get(name: str) -> "paradigms.Run":
        if name not in done:
            done[name] = paradigms.train(name, tiny_text, root)
        return done[name]

    return get


@pytest.fixture(scope="session")
def pretrained(tiny_session, tmp_path_factory) -> Path:
    """A 2-layer GPT trained 20 steps on stdlib text (the tiny setup): its final checkpoint. The transfer
    and preference tests start from it."""
    import trainwell

    run = tmp_path_factory.mktemp("pre") / "run"
    trainwell.train("default", tiny_session(eval__samples=0, log__plots=False), run_dir=run)
    return run / "checkpoints" / "step-20"


@pytest.fixture(scope="session")
def pref_data(tiny_text, tmp_path_factory) -> dict[str, Path]:
    """sft.jsonl, pairs.jsonl and prompts.jsonl (TRL's columns) cut from the tiny text's lines."""
    return pref_rows(tiny_text, tmp_path_factory.mktemp("pref"))


@pytest.fixture(scope="session")
def pref(pref_data, pretrained):
    """--set values for a tiny preference stage (sft, reward, dpo, ppo, grpo) started from `pretrained`."""
    return lambda stage, **extra: pref_sets(pref_data, pretrained, stage, **extra)


@pytest.fixture(scope="session")
def reward_model(pref, tmp_path_factory) -> Path:
    """A tiny reward model trained on the pairs (its run directory), for PPO."""
    import trainwell

    run = tmp_path_factory.mktemp("rm") / "run"
    trainwell.train("code_reward", pref("reward"), run_dir=run)
    return run
