"""Live tensor memory, measured op by op.

A ``TorchDispatchMode`` sees every tensor an operator returns (factories included). Each new
storage is counted once, under the category of the phase it was created in (the caller sets
``phase``: activations in forward, temporaries in backward, optimizer state in the step), and
uncounted when it is freed (a weakref to the storage fires). The peak of the sum, and the
breakdown at that moment, is the memory of what ran. Under ``FakeTensorMode`` the same
bookkeeping runs without allocating anything (tensors carry shape, dtype and device only): that
is how trainwell/engine/plan.py measures a training step of any size. With real tensors and a
budget it stops a build that would allocate more than the machine has free, before the memory
is written (``torch.empty`` reserves pages, the initialiser after it would touch them).

torch.distributed._tools.MemTracker keeps similar books, but it is private API, refuses a module
that runs twice per step and has no budget; these few lines are ours.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode, is_traceable_wrapper_subclass
from torch.utils._pytree import tree_flatten

CATEGORIES = ("weights", "gradients", "optimizer", "activations", "temporaries")


class OverBudget(Exception):
    """Live tensors on ``device`` passed the budget (raised from inside the operator that did it)."""

    def __init__(self, device: str, total: int, budget: int):
        super().__init__(f"{total} bytes of tensors on {device}, over the budget of {budget}")
        self.device, self.total, self.budget = device, total, budget


def storages(t: torch.Tensor) -> list[torch.UntypedStorage]:
    """The storages that hold ``t``'s data; a wrapper subclass (e.g. torchao's NF4Tensor) holds several."""
    if is_traceable_wrapper_subclass(t):
        names, _ = t.__tensor_flatten__()  # type: ignore[attr-defined]
        out: list[torch.UntypedStorage] = []
        for name in names:
            inner = getattr(t, name)
            if isinstance(inner, torch.Tensor):
                out.extend(storages(inner))
        return out
    try:
        return [t.untyped_storage()]
    except (RuntimeError, NotImplementedError):  # a tensor without storage (e.g. a sparse layout)
        return []


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes of the storages behind ``t`` (a view counts its whole storage)."""
    return sum(st.nbytes() for st in storages(t))


class LiveTensors(TorchDispatchMode):
    """Bytes of live tensor storages per device type ("cpu", "cuda") and category, and their peak.

    ``budgets`` (device type -> bytes): an operator whose outputs push that device's total past
    its budget raises :class:`OverBudget`.
    """

    @classmethod
    def _should_skip_dynamo(cls) -> bool:
        # torch wraps a mode's __torch_dispatch__ in _disable_dynamo, which imports torch._dynamo
        # (+70 MiB resident) on the first operator; this mode runs around eager builds and fake-tensor
        # simulations, never inside torch.compile, so it has nothing to skip.
        return False

    def __init__(self, budgets: dict[str, int] | None = None):
        super().__init__()
        self.phase = "activations"
        self.budgets = dict(budgets or {})
        self._live: dict[int, list[Any]] = {}  # id(storage) -> [device, category, bytes, weakref]
        self.current: dict[str, dict[str, int]] = {}
        self.peak: dict[str, int] = {}
        self.at_peak: dict[str, dict[str, int]] = {}  # the breakdown when the peak was reached

    # -- what the caller tells us
    def track(self, t: torch.Tensor, category: str | None = None) -> None:
        """Count a tensor that was made outside the mode (or move it to ``category`` if counted)."""
        for st in storages(t):
            entry = self._live.get(id(st))
            if entry is None:
                self._add(st, t.device.type, category or self.phase)
            elif category is not None and entry[1] != category:
                cur = self.current[entry[0]]
                cur[entry[1]] -= entry[2]
                cur[category] += entry[2]
                entry[1] = category

    def total(self, device: str) -> int:
        return sum(self.current.get(device, {}).values())

    # -- the bookkeeping
    def _add(self, st: torch.UntypedStorage, device: str, category: str) -> None:
        key, nbytes = id(st), st.nbytes()
        self._live[key] = [device, category, nbytes, weakref.ref(st, lambda _, k=key: self._free(k))]
        cur = self.current.setdefault(device, dict.fromkeys(CATEGORIES, 0))
        cur[category] += nbytes
        total = sum(cur.values())
        if total > self.peak.get(device, -1):
            self.peak[device], self.at_peak[device] = total, dict(cur)
        budget = self.budgets.get(device)
        if budget is not None and total > budget:
            raise OverBudget(device, total, budget)

    def _free(self, key: int) -> None:
        entry = self._live.pop(key, None)
        if entry is not None:
            self.current[entry[0]][entry[1]] -= entry[2]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        # in-place ops and views return storages that already existed (a parameter updated by the
        # optimizer, a reshaped activation): only storages no input had are new memory
        seen = {id(st) for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor) for st in storages(t)}
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                for st in storages(t):
                    if id(st) not in seen and id(st) not in self._live:
                        self._add(st, t.device.type, self.phase)
        return out
