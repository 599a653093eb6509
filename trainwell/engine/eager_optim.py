"""torch's optimizers without the wrappers torch puts on their methods for ``torch.compile``."""

from __future__ import annotations

import inspect
from typing import Any

import torch


class Eager:
    """Mixin for a torch optimizer: the same methods without the wrappers torch puts on them for
    ``torch.compile`` (``_disable_dynamo`` on ``add_param_group``, ``zero_grad``, ``state_dict`` and
    ``load_state_dict``; ``_use_grad`` around ``step``). Each wrapper imports ``torch._dynamo`` on its
    first call, which costs a process +70 MiB resident (bench/RESULTS.md, issue 13, session 16) and
    does nothing for an eager run. Same update rule, same state dict: only the wrappers are skipped
    (``inspect.unwrap`` follows ``functools.wraps``; a method without one is used as it is). Under
    ``torch.compile`` or with ``differentiable=True`` the step is torch's own, wrapper included.
    """

    add_param_group = inspect.unwrap(torch.optim.Optimizer.add_param_group)
    zero_grad = inspect.unwrap(torch.optim.Optimizer.zero_grad)
    state_dict = inspect.unwrap(torch.optim.Optimizer.state_dict)
    load_state_dict = inspect.unwrap(torch.optim.Optimizer.load_state_dict)

    def step(self, closure: Any = None) -> Any:
        wrapped = super().step  # type: ignore[misc]
        if torch.compiler.is_compiling() or self.defaults.get("differentiable"):  # type: ignore[attr-defined]
            return wrapped(closure)
        with torch.no_grad():  # what the skipped wrapper does for a non-differentiable optimizer
            return inspect.unwrap(wrapped)(self, closure)


class AdamW(Eager, torch.optim.AdamW):
    pass


class SGD(Eager, torch.optim.SGD):
    pass
