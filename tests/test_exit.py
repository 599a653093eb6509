"""The console script leaves without the interpreter's teardown (trainwell/cli.py, leave): the exit
status, atexit handlers, other threads and buffered output must be what a normal exit gives."""

from __future__ import annotations

import subprocess
import sys

import pytest

SCRIPT = """
import atexit, sys, threading, time
import torch
from trainwell import cli
atexit.register(lambda: print("atexit ran"))
def late():
    time.sleep(0.3)
    print("thread finished")
threading.Thread(target=late).start()
print("buffered", end="")  # no newline, no flush: must still come out
{call}
"""


def run(call: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", SCRIPT.format(call=call)], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("call, status", [
    ("sys.argv = ['trainwell', 'recipes']; cli.main()", 0),
    ("sys.argv = ['trainwell', 'train', '--set', 'train.steps=-3']; cli.main()", 2),
    ("cli.leave(3)", 3),
    ("cli.leave('stopped: reason')", 1),
])
def test_leave_keeps_what_a_normal_exit_does(call, status):
    out = run(call)
    assert out.returncode == status, out.stderr
    assert "buffered" in out.stdout and "thread finished" in out.stdout and "atexit ran" in out.stdout
    assert out.stdout.index("thread finished") < out.stdout.index("atexit ran")  # threads first, as Python does
    if "'train'" in call:
        assert "error:" in out.stderr and "train.steps" in out.stderr
    if "reason" in call:
        assert "stopped: reason" in out.stderr
