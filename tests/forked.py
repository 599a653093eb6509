"""trainwell's CLI (or a Python script) in a new process forked from a server that has already
imported torch and trainwell.

A fresh interpreter spends ~4 s of CPU importing torch, torch._dynamo and trainwell before it does
anything (measured on the 2-core CI kinds); the suite starts dozens of such processes, most of them
to be SIGKILLed at a random instant or to resume a run. A forked process is still a separate OS
process with its own PID, memory, exit status and streams, killed by a real SIGKILL; what it skips
is the interpreter start and the imports. The server (multiprocessing's forkserver, one per pytest
worker) imports and computes nothing else, so no OpenMP pool exists to be inherited: every child
starts its own threads as a fresh process does.

What a fork does not reproduce: a fresh interpreter's own string-hash seed (children share the
server's) and import-time behaviour. So the tests that depend on those keep `subprocess`: every
resume that finishes a killed run twice (tests/engine/test_exact_resume.py KILLS), the CLI's own
smoke tests (tests/test_cli_help.py, tests/track/test_imports.py) and every multi-process run.

    proc = start(["train", "default", "--run-dir", d], env=...)   # Popen-like: pid, poll, wait, send_signal
    done = run(["eval", d])                                        # CompletedProcess (text streams)
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import weakref
from pathlib import Path

# trainwell first: it sets OpenMP's environment before torch loads it (trainwell/threads.py); then what a
# training run imports that costs time (torch._dynamo: every optimizer step; sklearn: the digits data)
PRELOAD = ["trainwell", "trainwell.cli", "torch._dynamo", "trainwell.api", "trainwell.engine.trainer",
           "trainwell.paradigms.supervised", "trainwell.paradigms.rl", "matplotlib.pyplot", "sklearn.datasets", "forked"]
_context = None


def context():
    global _context
    if _context is None:
        _context = multiprocessing.get_context("forkserver")
        _context.set_forkserver_preload(PRELOAD)
    return _context


def _child(argv: list[str], script: str | None, env: dict[str, str], out: str, err: str, cwd: str | None) -> None:
    """In the forked process: the environment, streams and sys.path a fresh `python -m trainwell
    ARGV` (or `python SCRIPT ARGV`) would have; exits with the CLI's status."""
    import atexit
    import runpy

    os.environ.clear()
    os.environ.update(env)
    if cwd is not None:
        os.chdir(cwd)
    sys.path[:0] = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    for fd, path in ((1, out), (2, err)):
        f = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(f, fd)
        os.close(f)
    sys.stdout = open(1, "w", buffering=1, closefd=False)
    sys.stderr = open(2, "w", buffering=1, closefd=False)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a fresh interpreter
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    code = 0
    try:
        if script is None:
            from trainwell.cli import main

            sys.argv = ["trainwell", *argv]
            main()
        else:
            sys.argv = [script, *argv]
            sys.path.insert(0, os.path.dirname(os.path.abspath(script)))  # as `python SCRIPT` puts its folder first
            runpy.run_path(script, run_name="__main__")
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        if not isinstance(e.code, (int, type(None))):
            print(e.code, file=sys.stderr)
    except BaseException:  # noqa: BLE001 - what the interpreter would print before exiting with 1
        import traceback

        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class Forked:
    """The slice of subprocess.Popen the tests use; the streams are files, read by ``output()``."""

    def __init__(self, argv: list[str], *, script: str | None = None, env: dict[str, str] | None = None,
                 cwd: str | Path | None = None):
        self.dir = tempfile.mkdtemp(prefix="trainwell-forked-")
        weakref.finalize(self, shutil.rmtree, self.dir, True)  # the two stream files go with this object
        self.out, self.err = os.path.join(self.dir, "stdout"), os.path.join(self.dir, "stderr")
        self.args = [script or "-m trainwell", *argv]
        self._proc = context().Process(target=_child, args=(list(argv), script, dict(env or os.environ),
                                                            self.out, self.err, cwd and str(cwd)), daemon=False)
        self._proc.start()
        self.pid = self._proc.pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and self._proc.exitcode is not None:
            self.returncode = self._proc.exitcode
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        self._proc.join(timeout)
        if self.poll() is None:
            raise subprocess.TimeoutExpired(self.args, timeout)
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def output(self) -> tuple[str, str]:
        return (Path(self.out).read_text(errors="replace"), Path(self.err).read_text(errors="replace"))


def start(argv: list[str], **kw) -> Forked:
    """``kw``: script, env, cwd (see Forked)."""
    return Forked(argv, **kw)


def run(argv: list[str], *, timeout: float = 600, **kw) -> "subprocess.CompletedProcess[str]":
    """Like subprocess.run(capture_output=True, text=True, timeout=...): the process is killed at the timeout."""
    proc = start(argv, **kw)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    out, err = proc.output()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
