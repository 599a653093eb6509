"""Every random stream that can affect the next batch or update, as one Stateful.

Python ``random``, NumPy's legacy global ``RandomState``, torch CPU and every CUDA device.
Components that own a private generator (``np.random.default_rng()``, a
``torch.Generator`` in a data loader) must checkpoint it in their own ``state_dict``; this
class only covers the process-global streams.
"""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import torch


class RNGState:
    """Stateful over the global RNGs; ``load_state_dict`` makes them continue exactly."""

    def state_dict(self) -> dict[str, Any]:
        version, internal, gauss_next = random.getstate()
        kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)  # type: ignore[misc]
        return {
            "python": {"version": version, "state": list(internal), "gauss_next": gauss_next},
            "numpy": {
                "kind": str(kind),
                "keys": [int(k) for k in keys],  # 624 uint32 words; JSON ints are exact
                "pos": int(pos),
                "has_gauss": int(has_gauss),
                "cached_gaussian": float(cached),
            },
            "torch_cpu": torch.get_rng_state(),  # uint8 tensor
            "cuda": list(torch.cuda.get_rng_state_all()) if torch.cuda.is_available() else [],
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        py = state_dict["python"]
        # random.setstate insists on tuples, which a serialised form may have turned into lists.
        random.setstate((py["version"], tuple(py["state"]), py["gauss_next"]))
        npy = state_dict["numpy"]
        np.random.set_state(
            (
                npy["kind"],
                np.asarray(npy["keys"], dtype=np.uint32),
                npy["pos"],
                npy["has_gauss"],
                npy["cached_gaussian"],
            )
        )
        torch.set_rng_state(state_dict["torch_cpu"].to("cpu", torch.uint8))
        saved_cuda = list(state_dict.get("cuda") or [])
        if not saved_cuda:
            return
        n_now = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n_now != len(saved_cuda):
            # Resuming on a different GPU count cannot be bit-exact anyway; say so, don't die.
            warnings.warn(
                f"checkpoint has CUDA RNG state for {len(saved_cuda)} device(s) but "
                f"{n_now} are visible; restoring the first {min(n_now, len(saved_cuda))}, "
                "so GPU randomness will not continue exactly.",
                stacklevel=2,
            )
        for i, s in enumerate(saved_cuda[:n_now]):
            torch.cuda.set_rng_state(s.to("cpu", torch.uint8), device=i)
