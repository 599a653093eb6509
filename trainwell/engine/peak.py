"""Measured peak matmul throughput of this device, for model FLOP utilisation (MFU).

Vendor peak numbers do not exist for most CPUs and overstate what torch can reach, so the
peak is *measured* once per machine (device model, thread count, dtype) with large square
matmuls and cached next to the token cache. MFU = model FLOPs per second / this peak.
"""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import torch


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cache_file() -> Path:
    root = Path(os.environ.get("TRAINWELL_CACHE", Path.home() / ".cache" / "trainwell"))
    return root / "peak_flops.json"


def probe(device: torch.device, dtype: torch.dtype, n: int = 2048, seconds: float = 0.3) -> float:
    """FLOP/s of an n x n matmul, best of repeated timings after a warm-up."""
    # a private generator: probing must not move the global RNG (that would break exact resume)
    g = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        a @ b
    sync()
    best, spent = float("inf"), 0.0
    while spent < seconds:
        t0 = time.perf_counter()
        a @ b
        sync()
        dt = time.perf_counter() - t0
        best, spent = min(best, dt), spent + dt
    return 2 * n**3 / best


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    key = f"{device.type}|{device_name(device)}|threads={torch.get_num_threads()}|{dtype}"
    path = cache_file()
    try:
        table = json.loads(path.read_text())
    except (OSError, ValueError):
        table = {}
    if key not in table:
        table[key] = probe(device, dtype)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_text(json.dumps(table, indent=1))
            os.replace(tmp, path)
        except OSError:
            pass  # the cache only saves the next run a fraction of a second
    return float(table[key])
