"""The trainer's side of the sandbox: a pool of sealed zygote processes and the jobs sent to them.

    with Sandbox(workers=2) as box:
        replies = box.map([calls_job(program, "f", [[1, 2]]), check_job(program, "f", prompt, test)])

A reply is the raw record of what happened (reports, verdict, output, exit codes, timing); the
verdict on it is decided by trainwell/sandbox/judge.py, in this process, with the expected values.
"""

from __future__ import annotations

import json
import os
import queue
import socket
import subprocess
import sys
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from trainwell.errors import TrainwellError
from trainwell.sandbox import plain, wire

ZYGOTE = Path(__file__).with_name("zygote.py")
SLACK_S = 30.0  # the trainer's own deadline on a reply, past the job's (the zygote enforces the job's)


class SandboxUnavailable(TrainwellError):
    """The isolation the sandbox needs is not available here."""


@dataclass
class Limits:
    """What one program may use. ``timeout``: wall-clock seconds for the whole job (the CPU limit is
    one second more); memory is address space per process; ``nproc`` counts processes and threads."""

    timeout: float = 3.0
    memory_mb: int = 512
    nproc: int = 4
    fsize_mb: int = 16
    nofile: int = 64
    tmp_mb: int = 16
    output_bytes: int = 64 << 10

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise TrainwellError(f"sandbox limit {name} = {value!r} must be positive.")


@dataclass
class Job:
    kind: str                       # "calls" or "check"
    program: str
    entry_point: str
    calls: list[list[Any]] = field(default_factory=list)   # calls: [[args], {kwargs}] as plain trees
    prompt: str = ""                # check: run in the test process before the test (helpers)
    test: str = ""                  # check: defines check(candidate)


def calls_job(program: str, entry_point: str, inputs: Iterable[list[Any] | tuple[Any, ...]]) -> Job:
    """Call ``entry_point(*args)`` for each ``args`` in ``inputs`` (plain data)."""
    calls = [[plain.to_tree(list(args)), plain.to_tree({})] for args in inputs]
    return Job("calls", program, entry_point, calls=calls)


def check_job(program: str, entry_point: str, prompt: str, test: str) -> Job:
    return Job("check", program, entry_point, prompt=prompt, test=test)


def unavailable_message(reason: str) -> str:
    return (f"The code sandbox cannot isolate programs here: {reason}; it needs Linux and root (CAP_SYS_ADMIN, "
            f"as in a VM or a privileged container) for its namespaces and unprivileged uids - run it there, or "
            f"pass --unsafe (sandbox.unsafe = true) to run candidates with resource limits only, without isolation.")


class Zygote:
    """One sealed sandbox process and the socket to it."""

    def __init__(self, unsafe: bool, _preexec: Callable[[], None] | None = None):
        if not sys.platform.startswith("linux"):
            raise SandboxUnavailable(unavailable_message(f"this is {sys.platform}, not Linux"))
        self.unsafe = unsafe
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock = mine
        # -I -S: no environment variables, user site or site-packages reach it; env={}: nothing to inherit
        self.proc = subprocess.Popen([sys.executable, "-I", "-S", str(ZYGOTE), str(theirs.fileno()),
                                      "unsafe" if unsafe else "isolated"], pass_fds=[theirs.fileno()], env={},
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     close_fds=True, preexec_fn=_preexec)
        theirs.close()
        mine.settimeout(60)
        try:
            got = wire.recv(mine)
        except OSError as e:
            got = None
            why = str(e)
        else:
            why = "it exited during start-up"
        if got is None or not got[0].get("ready"):
            self.close()
            raise SandboxUnavailable(unavailable_message(got[0].get("error", why) if got else why))
        self.pid = int(got[0]["pid"])

    def run(self, job: Job, limits: Limits) -> dict[str, Any]:
        msg = {"kind": job.kind, "program": job.program, "entry_point": job.entry_point, "calls": job.calls,
               "limits": asdict(limits)}
        fds: list[int] = []
        if job.kind == "check":
            # the test travels in a memfd straight to the test process: the zygote (and so every
            # candidate, each a copy of it) never holds its text
            fd = os.memfd_create("trainwell-test", os.MFD_CLOEXEC)
            os.write(fd, json.dumps({"prompt": job.prompt, "test": job.test}).encode("utf-8"))
            fds = [fd]
        try:
            self.sock.settimeout(limits.timeout + SLACK_S)
            wire.send(self.sock, msg, fds)
            got = wire.recv(self.sock)
        finally:
            for fd in fds:
                os.close(fd)
        if got is None:
            raise OSError("the sandbox process exited")
        return got[0]

    def close(self) -> None:
        try:
            self.sock.close()
        finally:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Sandbox:
    """``workers`` zygotes (default: one per core), each serving one job at a time."""

    def __init__(self, workers: int = 0, limits: Limits | None = None, unsafe: bool = False,
                 _preexec: Callable[[], None] | None = None):
        self.limits = limits or Limits()
        self.unsafe = unsafe
        n = workers or len(os.sched_getaffinity(0))
        self.zygotes: list[Zygote] = []
        try:
            for _ in range(n):
                self.zygotes.append(Zygote(unsafe, _preexec))
        except BaseException:
            self.close()
            raise
        self.free: queue.Queue[int] = queue.Queue()
        for i in range(n):
            self.free.put(i)

    def run(self, job: Job, limits: Limits | None = None) -> dict[str, Any]:
        i = self.free.get()
        try:
            try:
                return self.zygotes[i].run(job, limits or self.limits)
            except (OSError, ValueError) as e:  # a zygote that died or hung: replace it, fail the job
                self.zygotes[i].proc.kill()
                self.zygotes[i].close()
                self.zygotes[i] = Zygote(self.unsafe)
                return {"failure": f"the sandbox process failed ({e})"}
        finally:
            self.free.put(i)

    def map(self, jobs: list[Job], limits: Limits | None = None) -> list[dict[str, Any]]:
        """Run ``jobs`` on every zygote at once; replies in the jobs' order."""
        out: list[dict[str, Any] | None] = [None] * len(jobs)
        todo: queue.Queue[int] = queue.Queue()
        for j in range(len(jobs)):
            todo.put(j)

        def work() -> None:
            while True:
                try:
                    j = todo.get_nowait()
                except queue.Empty:
                    return
                out[j] = self.run(jobs[j], limits)

        threads = [threading.Thread(target=work, daemon=True) for _ in range(min(len(self.zygotes), len(jobs)))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return out  # type: ignore[return-value]

    def close(self) -> None:
        for z in self.zygotes:
            z.close()
        self.zygotes = []

    def __enter__(self) -> "Sandbox":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
