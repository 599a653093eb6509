"""A training step (and an inference pass) simulated on fake tensors: the memory it needs, measured
operator by operator, without allocating it.

The model is the real one, with its adapters and activation checkpointing; under torch's
``FakeTensorMode`` every operator returns a tensor that has a shape, dtype and device but no data,
so a step of any size (context 100,000 included) runs in a fraction of a second and allocates
nothing. :class:`~trainwell.diagnostics.tracker.LiveTensors` counts what each operator returns and
what is freed. What the batch alone decides stays real (``target != -100``, the count of masked
tokens), so data-dependent shapes come out as in the real step. The model's weights, buffers,
gradients and the RNG streams are left exactly as they were.
"""

from __future__ import annotations

import contextlib
import copy
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten

from trainwell.checkpoint.rng import RNGState
from trainwell.config.schema import OptimConfig
from trainwell.diagnostics.tracker import CATEGORIES, LiveTensors, storages, tensor_bytes
from trainwell.engine.job import to_device
from trainwell.engine.optim import build_optimizer
from trainwell.engine.precision import Precision


class CannotSimulate(Exception):
    """The step does something fake tensors cannot do (e.g. a shape that depends on the model's
    output values); the message says what."""


@dataclass
class StepMemory:
    """Bytes on the training device at the peak of a step, by category (weights included)."""

    peak: int
    at_peak: dict[str, int]
    after_forward: int = 0  # everything alive at the end of the forward pass (the saved activations)
    flops: float = 0.0  # FLOPs of one optimizer step (matmuls, convolutions, attention), measured


@dataclass
class InferenceMemory:
    forward: int  # weights + a forward pass without gradients on one batch (evaluation)
    generate: int | None = None  # weights + KV cache + prefill and one decode step (models with new_cache)
    kv_cache: int | None = None  # of those, the cache alone
    rows: int = 0
    capacity: int = 0


# ------------------------------------------------------------------------------------------ state


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of every parameter and buffer, each storage once (tied weights), 4-bit bases included."""
    seen: set[int] = set()
    total = 0
    for t in [*model.parameters(), *model.buffers()]:
        for st in storages(t):
            if id(st) not in seen:
                seen.add(id(st))
                total += st.nbytes()
        state = getattr(t, "quant_state", None)  # bitsandbytes keeps the 4-bit scales beside the weight
        if state is not None:
            from trainwell.adapters.quant import quant_state_bytes

            total += quant_state_bytes(state)
    return total


@contextlib.contextmanager
def untouched(model: torch.nn.Module) -> Iterator[None]:
    """Leave the model's buffers, gradients, mode and the global RNG streams as they were."""
    rng = RNGState().state_dict()
    buffers = [(b, b.detach().clone()) for b in model.buffers() if not isinstance(b, FakeTensor)]
    grads = [(p, p.grad) for p in model.parameters()]
    training = model.training
    try:
        yield
    finally:
        with torch.no_grad():
            for b, saved in buffers:
                if b.shape == saved.shape:
                    b.copy_(saved)
        for p, g in grads:
            p.grad = g
        model.train(training)
        RNGState().load_state_dict(rng)


def peek_batch(source: Any, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The next batch the source would yield, with the source rewound to where it was.

    Sources are Stateful (that is what makes resume exact): their state before the draw is loaded
    back after it. An RL source acts in its environments with the model to make a batch, so the
    model's buffers (observation statistics) and the RNG streams are restored too.
    """
    state = copy.deepcopy(source.state_dict())
    with untouched(model):
        try:
            return next(source)
        finally:
            source.load_state_dict(state)


# ------------------------------------------------------------------------------------------ fake modes


class KnownValues(TorchDispatchMode):
    """Run an operator on real tensors when all its tensor inputs have known values (the batch, the
    model's buffers, and what was computed from them alone: masks, counts, indices, a running
    statistic's count), and give a fake operator integer indices instead of a real boolean mask, so
    the fake result has the shape the real one would have (``logits[target != -100]``). Parameters
    stay fake: everything computed from them is the step's memory."""

    def __init__(self, known: list[torch.Tensor]):
        super().__init__()
        self._real: dict[int, weakref.ref[Any]] = {}
        for t in known:
            if isinstance(t, torch.Tensor) and not isinstance(t, FakeTensor):
                self._mark(t)

    def _mark(self, t: torch.Tensor) -> None:
        for st in storages(t):
            self._real[id(st)] = weakref.ref(st)

    def is_real(self, t: Any) -> bool:
        if not isinstance(t, torch.Tensor) or isinstance(t, FakeTensor):
            return False
        sts = storages(t)
        return bool(sts) and all((r := self._real.get(id(st))) is not None and r() is st for st in sts)

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        if inputs and all(self.is_real(t) for t in inputs):
            with _disable_current_modes():
                out = func(*args, **kwargs)
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    self._mark(t)
            return out
        if func in _INDEXING and len(args) > 1:  # (self, indices, ...): boolean masks -> integer indices
            args = (args[0], self._integer_indices(args[1]), *args[2:])
        return func(*args, **kwargs)

    def _integer_indices(self, indices: list[Any]) -> list[Any]:
        out: list[Any] = []
        for idx in indices:
            if self.is_real(idx) and idx.dtype in (torch.bool, torch.uint8):
                with _disable_current_modes():
                    out.extend(idx.nonzero().unbind(1))  # a k-dim mask stands for k integer index tensors
            else:
                out.append(idx)
        return out


_INDEXING = {torch.ops.aten.index.Tensor, torch.ops.aten.index_put.default, torch.ops.aten.index_put_.default,
             torch.ops.aten._index_put_impl_.default}


@contextlib.contextmanager
def fake_step_modes(model: torch.nn.Module, batch: dict[str, torch.Tensor], tracker: LiveTensors) -> Iterator[None]:
    """Fake tensors underneath, the tracker above them, arithmetic on known values on top.

    The model's real parameters and buffers get their fake twins first and are counted as weights:
    an operator on a real tensor works on its twin, so a view of a weight is not new memory.
    """
    from torch._subclasses.fake_tensor import DataDependentOutputException, DynamicOutputShapeException

    fake = FakeTensorMode(allow_non_fake_inputs=True)
    try:
        with fake:
            # held here: the fake mode keeps a twin only as long as someone else does
            twins = [t if isinstance(t, FakeTensor) else fake.from_tensor(t) for t in [*model.parameters(),
                                                                                      *model.buffers()]]
            for t in twins:
                tracker.track(t, "weights")
            known = [*tree_flatten(batch)[0], *model.buffers()]
            with tracker, KnownValues(known):
                yield
            del twins
    except (DynamicOutputShapeException, DataDependentOutputException) as e:
        op = getattr(e, "func", None) or (e.args[0] if e.args else "an operator")
        raise CannotSimulate(f"{op} needs the values of a tensor the model computed, which a simulated step "
                             f"does not have") from None


def _trainable(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in model.parameters() if p.requires_grad]


def _quant_state_bytes(model: torch.nn.Module) -> int:
    """bitsandbytes keeps a 4-bit weight's scales beside it (not a tensor the model registers)."""
    states = [getattr(p, "quant_state", None) for p in model.parameters()]
    if not any(s is not None for s in states):
        return 0
    from trainwell.adapters.quant import quant_state_bytes

    return sum(quant_state_bytes(s) for s in states if s is not None)


def _breakdown(tracker: LiveTensors, device: torch.device, extra_weights: int) -> tuple[int, dict[str, int]]:
    at_peak = {c: tracker.at_peak.get(device.type, {}).get(c, 0) for c in CATEGORIES}
    at_peak["weights"] += extra_weights
    return tracker.peak.get(device.type, 0) + extra_weights, at_peak


# ------------------------------------------------------------------------------------------ simulations


def simulate_step(model: torch.nn.Module, objective: Callable[..., Any], batch: dict[str, torch.Tensor], *,
                  precision: Precision, optim: OptimConfig, grad_accum: int, device: torch.device,
                  steps: int = 2, count_flops: bool = False) -> StepMemory:
    """Memory of ``steps`` optimizer steps (the second one has the optimizer state the first made);
    with ``count_flops`` also the FLOPs of one step (torch.utils.flop_counter)."""
    batch = to_device(batch, device)
    tracker = LiveTensors()
    params = _trainable(model)
    micro = min(grad_accum, 2)  # the second micro-batch shows gradient accumulation; more add nothing
    after_forward, flops = 0, 0.0
    with untouched(model):
        hooks = [p.register_post_accumulate_grad_hook(lambda p: tracker.track(p.grad, "gradients")) for p in params]
        optimizer = build_optimizer(model, optim, device)
        try:
            with fake_step_modes(model, batch, tracker):
                model.train()
                for step in range(steps):
                    counter = None
                    if count_flops and step == 0:
                        from torch.utils.flop_counter import FlopCounterMode

                        counter = FlopCounterMode(display=False)
                    with counter or contextlib.nullcontext():
                        for _ in range(micro):
                            tracker.phase = "activations"
                            with precision.autocast():
                                out = objective(model, batch)
                            if not after_forward:
                                after_forward = tracker.total(device.type)
                            tracker.phase = "temporaries"
                            (out.loss / grad_accum).backward()
                            del out
                    if counter is not None:
                        flops = float(counter.get_total_flops()) * grad_accum / micro
                    tracker.phase = "optimizer"
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
        finally:
            for h in hooks:
                h.remove()
            del optimizer
    extra = _quant_state_bytes(model)
    peak, at_peak = _breakdown(tracker, device, extra)
    return StepMemory(peak=peak, at_peak=at_peak, after_forward=after_forward + extra, flops=flops)


def simulate_inference(model: torch.nn.Module, objective: Callable[..., Any], batch: dict[str, torch.Tensor], *,
                       precision: Precision, device: torch.device) -> InferenceMemory:
    """Evaluation (a forward pass without gradients on ``batch``) and, for models with a KV cache
    (``model.new_cache``), generation of ``len(batch)`` rows to the model's context: the cache, a prefill
    of the whole window and one decode step."""
    batch = to_device(batch, device)
    extra = _quant_state_bytes(model)
    tracker = LiveTensors()
    with untouched(model), torch.no_grad():
        model.eval()
        with fake_step_modes(model, batch, tracker), precision.autocast():
            objective(model, batch)
        forward = tracker.peak.get(device.type, 0) + extra
        ids = batch.get("input")
        context = getattr(model, "context", 0)
        if not (hasattr(model, "new_cache") and isinstance(ids, torch.Tensor) and ids.dim() == 2 and context > 1):
            return InferenceMemory(forward=forward)
        rows = ids.shape[0]
        tracker = LiveTensors()
        prompt = torch.zeros(rows, context - 1, dtype=ids.dtype, device=device)
        pad = torch.zeros(rows, dtype=torch.long, device=device)
        with fake_step_modes(model, {"prompt": prompt, "pad": pad}, tracker), precision.autocast():
            cache = model.new_cache(rows, context, pad)
            kv = sum(tensor_bytes(t) for t in [*cache.kt, *cache.v])
            model(prompt, cache)
            model(prompt[:, :1], cache)
            del cache
    return InferenceMemory(forward=forward, generate=tracker.peak.get(device.type, 0) + extra, kv_cache=kv,
                           rows=rows, capacity=context)
