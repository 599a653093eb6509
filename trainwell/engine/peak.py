"""Measured peak matmul throughput of this device, for model FLOP utilisation (MFU).

Vendor peak numbers do not exist for most CPUs and overstate what torch can reach, so the peak
is *measured* with square matmuls and cached per machine (engine/machine.py names it). A probe
can be spoiled by other processes on the same cores, so a number is only trusted (cached) when
it is the best of several probes and not far below what the CPU's capability level allows; and
when training itself measures more model FLOP/s than the peak, the peak is probed again and
raised to at least what was observed. So MFU = model FLOP/s / peak never exceeds 100 %.
"""

from __future__ import annotations

import time

import torch

from trainwell.engine.machine import cpu_flags, machine_key, read_cache, write_cache

CACHE = "peak_flops.json"
PROBES = 3  # probes per measurement; the best one counts
REPROBES = 3  # re-measurements per run at most; after that the peak just follows what training reached

# Far-below-possible floors, FLOP/s per thread: a probe under this was disturbed (or the CPU is
# not what its flags say) and is not cached. Set ~10-30x under what these CPU kinds measure
# (AMX Xeon: 190 GFLOP/s fp32, 1,300 bf16 per thread; AVX2 EPYC: ~7 fp32, ~0.25 emulated bf16).
FP32_FLOOR = {"avx512f": 10e9, "avx2": 1e9}
BF16_FLOOR = {"amx_bf16": 50e9, "avx512_bf16": 5e9}
SLOWEST = 0.02e9  # anything else (emulated bf16, old CPUs) per thread


def floor_per_thread(device: torch.device, dtype: torch.dtype) -> float:
    """The least FLOP/s one thread's quiet probe of ``dtype`` should reach on this CPU's capability level."""
    if device.type != "cpu":
        return 0.0  # GPUs are not shared by other processes the way cores are: no floor needed
    flags = cpu_flags()
    levels = BF16_FLOOR if dtype == torch.bfloat16 else FP32_FLOOR if dtype == torch.float32 else {}
    return next((v for flag, v in levels.items() if flag in flags), SLOWEST)


def floor_flops(device: torch.device, dtype: torch.dtype) -> float:
    """The least FLOP/s a quiet probe of ``dtype`` on all of this process's threads should reach."""
    return floor_per_thread(device, dtype) * torch.get_num_threads()


def probe(device: torch.device, dtype: torch.dtype, max_n: int = 2048, seconds: float = 0.1) -> float:
    """FLOP/s of an n x n matmul, best of repeated timings after a warm-up.

    n doubles from 256 until one matmul takes >= 10 ms (or n = max_n): emulated bf16 on an
    AVX2-only CPU runs ~0.5 GFLOP/s, where a 2048^2 matmul alone would take 30 s.
    """
    g = torch.Generator().manual_seed(0)  # private: probing must not move the global RNG (exact resume)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def once(a: torch.Tensor, b: torch.Tensor) -> float:
        t0 = time.perf_counter()
        a @ b
        sync()
        return time.perf_counter() - t0

    n = 256
    while True:
        a = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        b = torch.randn(n, n, generator=g).to(device=device, dtype=dtype)
        once(a, b)  # warm-up
        dt = once(a, b)
        if dt >= 0.01 or n >= max_n:
            break
        n *= 2
    best, spent = dt, dt
    while spent < seconds:
        dt = once(a, b)
        best, spent = min(best, dt), spent + dt
    return 2 * n**3 / best


def measure(device: torch.device, dtype: torch.dtype, probes: int = PROBES) -> float:
    """Best of several probes, a short pause between them (a burst of other work may pass)."""
    best = 0.0
    for i in range(probes):
        if i:
            time.sleep(0.02)
        best = max(best, probe(device, dtype))
    return best


def _key(device: torch.device, dtype: torch.dtype) -> str:
    return f"{machine_key(device)}|{dtype}"


def _store(device: torch.device, dtype: torch.dtype, flops: float, how: str) -> None:
    table = read_cache(CACHE)
    table[_key(device, dtype)] = {"flops": flops, "how": how, "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
    write_cache(CACHE, table)


def peak_flops(device: torch.device, dtype: torch.dtype) -> float:
    """The cached peak, or a fresh measurement (cached only if it is trustworthy)."""
    entry = read_cache(CACHE).get(_key(device, dtype))
    floor = floor_flops(device, dtype)
    if isinstance(entry, dict) and float(entry.get("flops", 0)) >= floor:
        return float(entry["flops"])
    flops = measure(device, dtype)
    if flops >= floor:
        _store(device, dtype, flops, f"best of {PROBES} probes")
    return flops


class PeakMeter:
    """MFU against the peak of ``ranks`` devices like this one; re-probes when training beats it."""

    def __init__(self, device: torch.device, dtype: torch.dtype, ranks: int = 1):
        self.device, self.dtype, self.ranks = device, dtype, ranks
        self.per_device = peak_flops(device, dtype)
        self.reprobes = 0

    def mfu(self, model_flops_per_s: float) -> float:
        per_device = model_flops_per_s / self.ranks
        if per_device > self.per_device:
            # the peak was wrong (probed under load, or before a driver/BIOS change): measure again,
            # and never believe less than what training itself just did
            measured = measure(self.device, self.dtype) if self.reprobes < REPROBES else 0.0
            self.reprobes += 1
            self.per_device = max(measured, per_device)
            _store(self.device, self.dtype, self.per_device, "re-probed after training beat the cached peak")
        return per_device / self.per_device
