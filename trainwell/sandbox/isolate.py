"""Linux isolation from Python's standard library: namespaces, mounts, a new root, rlimits, a new uid.

Python 3.11 has no ``os.unshare``/``mount``/``pivot_root``: they are called through ctypes. Used by
trainwell/sandbox/zygote.py (imported by file path: standard library only, no trainwell imports).

Two steps:
- :func:`seal_zygote`, once per sandbox process (as root): new mount, network, IPC and UTS
  namespaces, then a new root on a tmpfs holding read-only binds of /usr (and /bin, /lib, ...
  as the host has them), the Python installation, and /dev/null, zero, random, urandom, full -
  nothing of the host's home, /etc, /proc, /work, /tmp or the run directory; then that root
  is remounted read-only. The network namespace has only a loopback that is down.
- :func:`clone_job` per job (or, where no clone number is known, :func:`enter_job` in an intermediate
  process): new PID and mount namespaces and a fresh size-capped tmpfs on /tmp; :func:`drop_to` in the candidate itself: rlimits, no new
  privileges, an unprivileged uid/gid without supplementary groups, an empty environment.
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import resource
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_REMOUNT = 32
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_PRIVATE = 1 << 18
MNT_DETACH = 2

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38

SYS_PIVOT_ROOT = {"x86_64": 155, "aarch64": 41}
SYS_CLONE = {"x86_64": 56, "aarch64": 220}
SIGCHLD = 17

DEVICES = ("null", "zero", "random", "urandom", "full")

_libc = ctypes.CDLL(None, use_errno=True)
_libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]
_libc.umount2.argtypes = [ctypes.c_char_p, ctypes.c_int]
_libc.unshare.argtypes = [ctypes.c_int]
_libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]


class IsolationError(OSError):
    pass


def _check(ret: int, what: str) -> None:
    if ret != 0:
        e = ctypes.get_errno()
        raise IsolationError(e, f"{what} failed ({os.strerror(e)})")


def _b(s: str | None) -> bytes | None:
    return None if s is None else os.fsencode(s)


def unshare(flags: int, what: str) -> None:
    _check(_libc.unshare(flags), what)


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    _check(_libc.mount(_b(source), _b(target), _b(fstype), flags, _b(data)), f"mount {target}")


def prctl(option: int, arg: int) -> None:
    _check(_libc.prctl(option, arg, 0, 0, 0), f"prctl({option})")


def bind_readonly(source: str, target: str) -> None:
    """A read-only, nosuid, nodev bind of ``source`` at ``target`` (a file or a folder)."""
    if os.path.isdir(source):
        os.makedirs(target, exist_ok=True)
    else:
        os.makedirs(os.path.dirname(target), exist_ok=True)
        open(target, "a").close()
    mount(source, target, None, MS_BIND | MS_REC)
    # a bind takes the read-only flag only on a second, remounting call
    mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NODEV)


def system_folders() -> list[str]:
    """What a Python program needs to run: /usr and the top-level links or folders into it
    (/bin, /lib, /lib64, /sbin ...), and the folders of this Python's installation."""
    out = ["/usr"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        if os.path.lexists("/" + name):
            out.append("/" + name)
    for prefix in {os.path.realpath(sys.base_prefix), os.path.realpath(sys.base_exec_prefix)}:
        if not any(prefix == f or prefix.startswith(f + "/") for f in out):
            out.append(prefix)
    return out


def seal_zygote(root: str = "/tmp") -> None:
    """Namespaces and a new read-only root for this process and everything it forks later (as root)."""
    unshare(CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWIPC | CLONE_NEWUTS, "unshare(mount, network, IPC, UTS namespaces)")
    mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing below propagates back to the host
    folders = system_folders()
    mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV, "size=1m,mode=0755")
    for path in folders:
        target = root + path
        if os.path.islink(path):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            os.symlink(os.readlink(path), target)
        else:
            bind_readonly(path, target)
    for dev in DEVICES:
        if os.path.exists("/dev/" + dev):
            target = f"{root}/dev/{dev}"
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "a").close()
            mount("/dev/" + dev, target, None, MS_BIND)
            mount(None, target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID)
    os.makedirs(root + "/tmp", mode=0o755, exist_ok=True)
    new_root(root)
    mount(None, "/", None, MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV)


def new_root(root: str) -> None:
    """pivot_root into ``root`` and detach the host's tree, so no path leads back to it."""
    number = SYS_PIVOT_ROOT.get(platform.machine())
    if number is None:
        raise IsolationError(errno.ENOSYS, f"pivot_root: no syscall number known for {platform.machine()}")
    os.chdir(root)
    os.makedirs(".old", exist_ok=True)
    _check(_libc.syscall(number, b".", b".old"), "pivot_root")
    os.chdir("/")
    _check(_libc.umount2(b"/.old", MNT_DETACH), "umount the host's root")
    os.rmdir("/.old")


def clone_job() -> int:
    """fork() into new PID and mount namespaces at once (the child is PID 1 there): the raw clone
    system call, as fork() without glibc's or Python's after-fork handlers - the zygote is
    single-threaded, and a child that skips them (e.g. random's reseeding) only gets more
    deterministic. Returns 0 in the child, its PID in the parent; -1 where no syscall number is known."""
    number = SYS_CLONE.get(platform.machine())
    if number is None:
        return -1
    pid = _libc.syscall(number, CLONE_NEWPID | CLONE_NEWNS | SIGCHLD, 0, 0, 0, 0)
    if pid < 0:
        e = ctypes.get_errno()
        raise IsolationError(e, f"clone into new namespaces failed ({os.strerror(e)})")
    return pid


def job_tmp(tmp_mb: int) -> None:
    """A fresh /tmp of ``tmp_mb`` MiB in this process's own mount namespace."""
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={max(1, tmp_mb)}m,nr_inodes=4096,mode=1777")


def enter_job(tmp_mb: int) -> None:
    """In a job's intermediate process: the next fork is PID 1 of a new PID namespace (its death
    kills everything it started) and sees a fresh /tmp of ``tmp_mb`` MiB."""
    unshare(CLONE_NEWPID | CLONE_NEWNS, "unshare(PID, mount namespaces)")
    job_tmp(tmp_mb)


def set_limits(memory_mb: int, cpu_s: int, fsize_mb: int, nofile: int, nproc: int) -> None:
    """Hard rlimits (a lowered hard limit cannot be raised again without privileges)."""
    mb = 1 << 20
    for what, value in ((resource.RLIMIT_AS, memory_mb * mb), (resource.RLIMIT_CPU, cpu_s),
                        (resource.RLIMIT_FSIZE, fsize_mb * mb), (resource.RLIMIT_NOFILE, nofile),
                        (resource.RLIMIT_NPROC, nproc), (resource.RLIMIT_CORE, 0)):
        resource.setrlimit(what, (value, value))


def drop_to(uid: int) -> None:
    """Become ``uid`` (and gid ``uid``) with no supplementary groups and no way back to privileges."""
    prctl(PR_SET_NO_NEW_PRIVS, 1)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)
    prctl(PR_SET_DUMPABLE, 0)  # no ptrace or core from its own kind either


def die_with_parent() -> None:
    import signal
    prctl(PR_SET_PDEATHSIG, int(signal.SIGKILL))


# --------------------------------------------------------------------------- seccomp

# x86-64 system calls a program has no use for and that widen the kernel's attack surface; most need
# privileges it lacks anyway, but an unprivileged user namespace (unshare/clone with CLONE_NEWUSER)
# would hand it capabilities inside one - the usual first step of a kernel exploit.
DENIED_X86_64 = {
    "ptrace": 101, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
    "bpf": 321, "perf_event_open": 298, "userfaultfd": 323, "io_uring_setup": 425, "io_uring_enter": 426,
    "io_uring_register": 427, "keyctl": 250, "add_key": 248, "request_key": 249, "kexec_load": 246,
    "kexec_file_load": 320, "init_module": 175, "finit_module": 313, "delete_module": 176,
    "process_vm_readv": 310, "process_vm_writev": 311, "open_by_handle_at": 304, "name_to_handle_at": 303,
    "swapon": 167, "swapoff": 168, "reboot": 169, "acct": 163, "quotactl": 179, "open_tree": 428,
    "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432, "fspick": 433, "mount_setattr": 442,
}
CLONE_X86_64, CLONE3_X86_64 = 56, 435
CLONE_NEWUSER = 0x10000000
AUDIT_ARCH_X86_64 = 0xC000003E
X32_BIT = 0x40000000


class _Filter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint)]


class _Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_Filter))]


def seccomp_program() -> list[tuple[int, int, int, int]]:
    """The BPF filter as (code, jt, jf, k): deny DENIED_X86_64 and x32 calls with EPERM, clone with
    CLONE_NEWUSER too, clone3 with ENOSYS (glibc then falls back to clone, whose flags are visible);
    kill on another architecture. Jumps name labels, resolved at the end (pc + 1 + offset)."""
    LD, JEQ, JGE, JSET, RET = 0x20, 0x15, 0x35, 0x45, 0x06
    ALLOW, KILL, ERRNO = 0x7FFF0000, 0x80000000, 0x00050000
    code: list[tuple[int, Any, Any, int]] = [
        (LD, 0, 0, 4),                          # seccomp_data.arch
        (JEQ, "nr", "kill", AUDIT_ARCH_X86_64),
        "kill", (RET, 0, 0, KILL),
        "nr", (LD, 0, 0, 0),                    # seccomp_data.nr
        (JGE, "deny", 0, X32_BIT),
        *[(JEQ, "deny", 0, n) for n in sorted(DENIED_X86_64.values())],
        (JEQ, "clone", 0, CLONE_X86_64),
        (JEQ, "nosys", 0, CLONE3_X86_64),
        (RET, 0, 0, ALLOW),
        "deny", (RET, 0, 0, ERRNO | errno.EPERM),
        "clone", (LD, 0, 0, 16),                # args[0], its low 32 bits (little-endian)
        (JSET, "newuser", 0, CLONE_NEWUSER),   # BPF jumps only forward: a deny of its own
        (RET, 0, 0, ALLOW),
        "newuser", (RET, 0, 0, ERRNO | errno.EPERM),
        "nosys", (RET, 0, 0, ERRNO | errno.ENOSYS),
    ]
    labels, pc = {}, 0
    for item in code:
        if isinstance(item, str):
            labels[item] = pc
        else:
            pc += 1
    out, pc = [], 0
    for item in code:
        if isinstance(item, str):
            continue
        op, jt, jf, k = item
        rel = lambda j: labels[j] - pc - 1 if isinstance(j, str) else j  # noqa: E731
        assert all(0 <= rel(j) < 256 for j in (jt, jf)), "BPF jumps go forward, at most 255"
        out.append((op, rel(jt), rel(jf), k))
        pc += 1
    return out


def seccomp_deny() -> bool:
    """Install the filter on this process and all it starts (x86-64 only; needs no_new_privs first).
    Returns False where it does not apply."""
    if platform.machine() != "x86_64":
        return False
    prog = seccomp_program()
    table = (_Filter * len(prog))(*[_Filter(*f) for f in prog])
    fprog = _Program(len(prog), table)
    PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.cast(ctypes.pointer(fprog), ctypes.c_void_p).value,
                       0, 0), "seccomp")
    return True
