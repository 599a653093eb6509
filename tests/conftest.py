"""Shared fixtures (a private token cache, the tiny real-text setups, the CLI in- and out of process) and
how pytest-xdist spreads the suite over the cores."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest

from tinyrun import pref_rows, pref_sets, run_cli_here, tiny_sets  # noqa: E402  (tests/ is on sys.path: pytest puts the rootdir conftest's folder there)

# Every test (and every subprocess a test starts) uses a private cache, never ~/.cache; each pytest-xdist
# worker its own (a worker inherits the controller's environment, so a setdefault would share one).
os.environ["TRAINWELL_CACHE"] = tempfile.mkdtemp(prefix="trainwell-cache-")

# pytest-xdist (`-n auto --dist loadfile` in pyproject.toml): the suite's tests run one thread each and
# spend much of their time starting processes, so two workers use the two cores of CI. Tests go to
# workers in units (Units below): a module's tests stay together (module fixtures are built once),
# except in SPREAD, whose tests are independent and long; every test that starts torchrun is in one
# unit, so two multi-process runs never overlap (they would compete for the cores their timeouts
# assume). The longest units start first (FIRST), so no long unit is left for the end.
SPREAD = {"tests/engine/test_exact_resume.py", "tests/adapters/test_transfer.py"}
TORCHRUN = {"tests/distributed/test_multiprocess.py", "tests/distributed/test_teardown.py",
            "tests/distributed/test_muon_fsdp.py", "tests/distributed/test_data_split.py",
            "tests/paradigms/test_byo.py::test_two_ddp_processes_track_one_with_the_users_model_and_data"}
FIRST = ["torchrun", "tests/federated/test_runtimes.py", "tests/engine/test_bad_input.py",
         "tests/engine/test_exact_resume.py", "tests/adapters/test_transfer.py", "tests/engine/test_plan.py"]


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_auto_num_workers(config) -> int:
    """`-n auto`: one worker per core, at most 4 (each worker's runs take up to ~2 GB)."""
    return max(1, min(len(os.sched_getaffinity(0)), 4))


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if module in TORCHRUN or nodeid.split("[", 1)[0] in TORCHRUN:
                return "torchrun"
            return nodeid if module in SPREAD else module

        def _assign_work_unit(self, node) -> None:
            def rank(scope: str) -> int:
                return next((i for i, f in enumerate(FIRST) if scope.startswith(f)), len(FIRST))

            self.workqueue.move_to_end(min(self.workqueue, key=rank), last=False)  # stable: ties keep order
            super()._assign_work_unit(node)

    return Units(config, log)


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
    """`trainwell ARGS` in its own process, forked from one that has imported torch and trainwell
    (tests/forked.py); tests/test_cli_help.py starts fresh interpreters."""
    import forked

    return forked.run(list(args), timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"}, **kw)


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def cli_here():
    return run_cli_here


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
