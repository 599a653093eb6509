"""CPU thread settings that share cores gracefully. Imported by ``trainwell/__init__`` before torch.

torch's CPU wheels run their parallel regions (matmuls, many element-wise kernels) on GNU OpenMP
(libgomp). By default a libgomp thread that finishes its share of a region *spins* up to 300,000
times (GOMP_SPINCOUNT; with PAUSE at ~140 cycles on recent x86 that is milliseconds) before it
sleeps. Alone, that hides the wake-up latency. When another process holds one of the cores, the
thread that finished spins through the time slice its partner needs to finish the same region,
and every region waits for the scheduler: throughput collapses instead of halving
(bench/shared_cores.py measures it; bench/RESULTS.md "Shared cores").

So trainwell lowers the spin count to ``SPINCOUNT`` unless the user chose an OpenMP wait policy
or spin count. libgomp reads its environment once, when torch is imported, so this only works
when trainwell is imported first (the CLI, ``python -m trainwell``, ``import trainwell`` before
``import torch``); otherwise it changes nothing and says so in ``applied()``.
"""

from __future__ import annotations

import os
import sys

SPINCOUNT = "1000"  # ~50 us of spinning: covers the gaps between back-to-back regions of one step
OWN_KEYS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")  # any of these set by the user: leave OpenMP alone

_applied: dict[str, str] = {}
_late = False


MARK = "TRAINWELL_OMP_APPLIED"  # set with the default, so child processes (torchrun's ranks) know whose it is


def apply_defaults() -> None:
    global _late
    if os.environ.get(MARK) == os.environ.get("GOMP_SPINCOUNT") == SPINCOUNT:  # a parent trainwell set it
        _applied["GOMP_SPINCOUNT"] = SPINCOUNT
        return
    if any(k in os.environ for k in OWN_KEYS) or os.environ.get("TRAINWELL_OMP_DEFAULTS") == "0":
        return
    if "torch" in sys.modules:
        _late = True  # OpenMP already read its settings
        return
    os.environ["GOMP_SPINCOUNT"] = os.environ[MARK] = SPINCOUNT
    _applied["GOMP_SPINCOUNT"] = SPINCOUNT


def applied() -> str:
    """What this process's OpenMP runs with, in words (for run metadata)."""
    if _applied:
        return ", ".join(f"{k}={v}" for k, v in _applied.items()) + " (trainwell's default)"
    if _late:
        return "OpenMP defaults (torch was imported before trainwell)"
    own = [f"{k}={os.environ[k]}" for k in OWN_KEYS if k in os.environ]
    return ", ".join(own) + " (set by the user)" if own else "OpenMP defaults (TRAINWELL_OMP_DEFAULTS=0)"
