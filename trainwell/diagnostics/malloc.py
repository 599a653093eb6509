"""glibc's malloc, told to give freed memory back at once (Linux with glibc only).

By default glibc keeps a freed block below its mmap threshold in the heap for reuse; the threshold
grows by itself up to 32 MiB as large blocks are freed, so most activations of a training step end
up in the heap, and the heap's high-water mark (the process's RSS) stays above the live tensors:
bench/plan_accuracy.py measured 1.4-1.8x the live peak on this machine's runs. Reusing heap memory
saves page faults, so that is the right default, but when a run fits only without that slack, a
fixed mmap threshold of 64 KiB (which also stops its growth) and a small trim threshold make the
RSS follow the live tensors, at the price of faulting in fresh pages for every large tensor.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
SLACK = 2.0  # what the default heap may hold over the live peak (measured up to 1.8x; see the module doc)


@functools.cache
def _libc():  # glibc, or None where malloc is another one
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except OSError:
        return None


def trim() -> None:
    """Give the heap's free pages back to the system now (glibc's malloc_trim; nothing elsewhere)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)


def return_freed_memory() -> bool:
    """Switch this process's glibc malloc to returning freed blocks of 64 KiB and more at once, and
    trim its heap now; False where that is not glibc."""
    libc = _libc()
    if libc is None:
        return False
    ok = libc.mallopt(M_MMAP_THRESHOLD, 64 * 1024) == 1 and libc.mallopt(M_TRIM_THRESHOLD, 1024 * 1024) == 1
    if ok:
        libc.malloc_trim(0)
    return ok
