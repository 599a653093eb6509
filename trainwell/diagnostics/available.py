"""How much memory this process can still take: host RAM (the kernel's MemAvailable, or less when a
cgroup limits the process, as containers and batch schedulers do) and free GPU memory.

The host figure is what the kernel would let us allocate before the OOM killer or the cgroup's
limit strikes. File cache that the kernel would drop counts as free: MemAvailable already does so,
and for a cgroup its inactive file pages are subtracted from its usage.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

UNLIMITED = 1 << 60  # cgroup v1 writes "no limit" as a huge number (2^63 rounded to pages)


@dataclass
class Free:
    bytes: int
    source: str  # what bounded it, for messages: "MemAvailable", "cgroup /x (memory.max)", "cuda:0"


def mem_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    if text == "max":
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    return None if value >= UNLIMITED else value


def _inactive_file(stat: Path, key: str) -> int:
    try:
        for line in stat.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


def cgroup_free(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> Free | None:
    """The tightest (limit - usage) over this process's cgroup and its parents, v2 or v1; None if
    no cgroup limits memory."""
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return None
    best: Free | None = None
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2: one unified hierarchy
            base, limit, usage, stat_key = root, "memory.max", "memory.current", "inactive_file"
        elif "memory" in controllers.split(","):  # v1: the memory controller's own hierarchy
            base, limit, usage, stat_key = root / "memory", "memory.limit_in_bytes", "memory.usage_in_bytes", \
                "total_inactive_file"
        else:
            continue
        rel = Path(path.strip().lstrip("/"))
        # inside a container the listed path may be relative to a namespace root we cannot see: then
        # the mount point itself is our cgroup
        folders = [base / rel, *(base / p for p in rel.parents)] if (base / rel).is_dir() else [base]
        for folder in folders:
            cap = _read_int(folder / limit)
            if cap is None:
                continue
            used = (_read_int(folder / usage) or 0) - _inactive_file(folder / "memory.stat", stat_key)
            free = Free(max(0, cap - max(used, 0)), f"the cgroup limit of {folder} ({limit})")
            if best is None or free.bytes < best.bytes:
                best = free
    return best


def host_free() -> Free:
    """Bytes of RAM this process can still allocate."""
    avail = mem_available()
    free = Free(avail, "MemAvailable in /proc/meminfo") if avail is not None else None
    group = cgroup_free()
    if group is not None and (free is None or group.bytes < free.bytes):
        free = group
    if free is None:  # not Linux: no reliable figure, so nothing to refuse on
        return Free(UNLIMITED, "no memory figure on this system")
    return free


def device_free(device: object) -> Free:
    """Free memory of a CUDA device (torch.cuda.mem_get_info), or the host's for the CPU."""
    import torch

    dev = torch.device(device)  # type: ignore[arg-type]
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        return Free(int(free), f"free memory of {dev} ({torch.cuda.get_device_name(dev)})")
    return host_free()


def rss_bytes() -> int:
    """Resident memory of this process now (0 where /proc is missing)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def local_processes() -> int:
    """Processes of this run on this machine (torchrun's LOCAL_WORLD_SIZE): they share its RAM."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def size_text(n: float) -> str:
    """Bytes as a short figure in binary units: 1.23 GiB, 45.6 MiB, 789 KiB."""
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if abs(n) >= size:
            v = n / size
            return f"{v:,.0f} {unit}" if abs(v) >= 1000 else f"{v:.3g} {unit}"
    return f"{int(n)} B"
