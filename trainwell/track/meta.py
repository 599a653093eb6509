"""``meta.json``: what produced a run (DESIGN principle 7: a run dir is self-describing).

Every probe here is best-effort: metadata must never be the reason a training run fails to
start, so each lookup that can fail returns None instead of raising.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from trainwell.version import __version__

_PKG_DIR = Path(__file__).resolve().parent.parent  # the trainwell package folder


def _git(*args: str) -> str | None:
    """Run git in the package dir; None when git is missing or this is not a checkout."""
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=_PKG_DIR,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_info() -> dict[str, Any] | None:
    """Commit of the trainwell source tree (not the user's cwd) plus a dirty flag."""
    # An installed copy can sit inside some *other* repo (a venv in the user's project);
    # only trust the commit if this very file is tracked by the repo we are in.
    if _git("ls-files", "--error-unmatch", "__init__.py") is None:
        return None
    commit = _git("rev-parse", "HEAD")
    if not commit:
        return None
    # --untracked-files=no: a stray file in the checkout doesn't change what ran, edits do.
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def _torch_info() -> dict[str, Any]:
    try:
        import torch  # called when training starts, so torch is loaded anyway
    except ImportError:
        return {"torch": None, "torch_threads": None, "cuda": None, "cuda_devices": []}
    cuda: list[str] = []
    try:
        if torch.cuda.is_available():
            cuda = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except Exception:  # a broken driver must not stop the run; record "none found"
        cuda = []
    return {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.version.cuda,
        "cuda_devices": cuda,
    }


def _numpy_version() -> str | None:
    try:
        import numpy

        return numpy.__version__
    except ImportError:
        return None


def run_meta(*, seed: int, extra: Mapping | None = None) -> dict:
    """Versions, commit, host and seed; ``extra`` keys are merged last (caller wins)."""
    meta: dict[str, Any] = {
        "trainwell": __version__,
        "git": git_info(),
        "python": sys.version.split()[0],
        **_torch_info(),
        "numpy": _numpy_version(),
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "seed": seed,
        "start_time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "argv": list(sys.argv),
    }
    if extra:
        meta.update(extra)
    return meta


def _finite(obj: Any) -> Any:
    """NaN/Inf -> None, recursively: bare NaN is not valid JSON (same rule as metrics.jsonl)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> None:
    """Atomic write: readers (and a crash) see the old file or the new one, never half.

    Non-finite floats are written as null so the file stays valid JSON.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        # default=str: Paths, dtypes etc. in `extra` are recorded rather than crashing.
        json.dump(_finite(obj), f, indent=2, default=str, allow_nan=False)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
