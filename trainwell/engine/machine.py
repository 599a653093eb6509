"""What this machine is, for measurements cached per machine (matmul peak, precision probe).

A cached measurement is only valid on the hardware and software that produced it, so its key
names the device model, the CPU features that decide matmul speed, the torch version and the
thread count. The cache is one small JSON file per kind of measurement in the trainwell cache
folder ($TRAINWELL_CACHE or ~/.cache/trainwell), written atomically.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch

# CPU flags that decide how fast fp32 and bf16 matmuls run (Linux /proc/cpuinfo names)
MATMUL_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
# environment variables that cap the instruction sets torch's kernels use (oneDNN: bf16 matmuls, MKL:
# fp32 matmuls, ATen: vector kernels); a measurement taken under one setting is not valid under another
ISA_LIMITS = ("ONEDNN_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS", "ATEN_CPU_CAPABILITY")


def _cpuinfo() -> dict[str, str]:
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            key = key.strip()
            if key in ("model name", "flags") and key not in info:
                info[key] = value.strip()
    except OSError:
        pass
    return info


def cpu_flags() -> set[str]:
    """The CPU's feature flags as torch's kernels may use them: what /proc/cpuinfo lists, less what
    ONEDNN_MAX_CPU_ISA (oneDNN: bf16 matmuls) and ATEN_CPU_CAPABILITY (ATen's vector kernels) turn off."""
    flags = set(_cpuinfo().get("flags", "").split())
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "").upper()
    if isa and isa not in ("ALL", "DEFAULT"):
        if "AMX" not in isa:
            flags -= {"amx_bf16", "amx_tile", "amx_int8", "amx_fp16"}
        if not (isa.startswith("AVX512") or isa.startswith("AVX10")):
            flags = {f for f in flags if not f.startswith("avx512")}
        elif not any(k in isa for k in ("BF16", "FP16", "AMX", "AVX10")):
            flags.discard("avx512_bf16")
    if os.environ.get("ATEN_CPU_CAPABILITY", "").lower() in ("avx2", "default"):
        flags.discard("avx512f")
    return flags


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def cpu_features() -> str:
    """The matmul-relevant CPU features, e.g. 'avx2+fma+avx512f+avx512_bf16+amx_bf16+amx_tile'."""
    flags = cpu_flags()
    have = [f for f in MATMUL_FLAGS if f in flags]
    return "+".join(have) if have else (torch.backends.cpu.get_cpu_capability() or "unknown")


def machine_key(device: torch.device) -> str:
    """Identifies the hardware + software a measurement on ``device`` was taken with."""
    if device.type == "cuda":
        return f"cuda|{device_name(device)}|torch {torch.__version__}"
    limits = "".join(f"|{k}={os.environ[k]}" for k in ISA_LIMITS if os.environ.get(k))
    return (f"{device.type}|{device_name(device)}|{cpu_features()}|{torch.backends.cpu.get_cpu_capability()}"
            f"{limits}|torch {torch.__version__}|threads={torch.get_num_threads()}")


def cache_dir() -> Path:
    return Path(os.environ.get("TRAINWELL_CACHE", Path.home() / ".cache" / "trainwell"))


def read_cache(name: str) -> dict[str, Any]:
    try:
        table = json.loads((cache_dir() / name).read_text())
    except (OSError, ValueError):
        return {}
    return table if isinstance(table, dict) else {}


def write_cache(name: str, table: dict[str, Any]) -> None:
    path = cache_dir() / name
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(table, indent=1, sort_keys=True))
        os.replace(tmp, path)
    except OSError:
        pass  # a cache only saves the next run a moment; an unwritable one is not an error
