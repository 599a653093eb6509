"""The memory plan of a run, and the admission check every ``trainwell train`` makes with it.

The plan is measured, not guessed: the Trainer's own model (with its adapters and activation
checkpointing), objective and a real batch run two optimizer steps on fake tensors
(trainwell/engine/simulate.py), and every tensor the step makes is counted as it is made and freed.
That covers any model, including one named by import path, with no formula per architecture. For
several processes the one-process step at the per-rank batch is turned into per-rank memory: DDP
keeps everything and adds its gradient buckets, FSDP2 divides weights, gradients and optimizer
state by the world size and adds the units it gathers.

    plan = plan_run(cfg, build_job, device, world_size=1)   # `trainwell plan`: the numbers and the time
    admit(cfg, job, precision, strategy, device)          # the Trainer: refuses a step that cannot fit
"""

from __future__ import annotations

import contextlib
import math
import os
import pickle
import select
import signal
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator

import torch

from trainwell.config.schema import Config
from trainwell.diagnostics import malloc
from trainwell.diagnostics.available import Free, device_free, host_free, local_processes, rss_bytes, size_text
from trainwell.diagnostics.tracker import CATEGORIES, LiveTensors, OverBudget, tensor_bytes
from trainwell.engine.job import Job, total_steps
from trainwell.engine.precision import Precision, choose_precision
from trainwell.engine.simulate import (CannotSimulate, StepMemory, peek_batch, simulate_inference,
                                       simulate_step)
from trainwell.errors import ConfigError, TrainwellError


class DoesNotFit(TrainwellError):
    """The run would need more memory than this machine has free (the admission check)."""


@dataclass
class Plan:
    device: str  # "cpu", "cuda:0"
    device_name: str
    precision: str
    world_size: int
    strategy: str  # "none" (one process), "ddp", "fsdp"
    parameters: int
    trainable: int
    batch: int  # samples in one process's micro-batch
    grad_accum: int
    step: dict[str, int]  # per process at the peak of a training step, by term, as configured
    peak: int
    activation_checkpointing: int
    other: dict[str, int] | None = None  # the same with activation checkpointing the other way
    other_peak: int | None = None
    other_checkpointing: int | None = None
    inference: dict[str, Any] | None = None
    data: int = 0  # bytes the data source and evaluation batches hold (host memory)
    weights: int = 0  # of the whole model (one process under FSDP holds a shard of it while training)
    flops_per_step: float = 0.0  # measured, every process together
    flops_formula: float = 0.0  # 6N per token + attention (the shipped GPT), every process together
    matmul_peak: float = 0.0  # FLOP/s of this device, measured (engine/peak.py), per process
    total_steps: int = 0
    free: int = 0
    free_source: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def step_seconds(self) -> float:
        """A lower bound: the step's FLOPs at the device's measured matmul peak."""
        return self.flops_per_step / (self.matmul_peak * self.world_size) if self.matmul_peak else 0.0

    def host_need(self) -> int:
        """Host memory of the whole run on this machine: its processes' steps (on CPU) plus the data."""
        per_process = self.peak if self.device == "cpu" else 0
        return per_process * self.world_size + self.data

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["step_seconds"] = self.step_seconds
        return out


# ------------------------------------------------------------------------------------------ per-rank memory


def per_rank(step: StepMemory, model: torch.nn.Module, strategy: str, world_size: int,
             param_dtype: torch.dtype | None) -> dict[str, int]:
    """One process's memory from the one-process step at its share of the batch.

    DDP replicates weights, gradients and optimizer state and copies the gradients into buckets for
    the all-reduce. FSDP2 (each transformer block a unit, the rest the root) keeps 1/N of weights,
    gradients and optimizer state, the root unit gathered in the parameter dtype for the whole step,
    the running block and the prefetched next one gathered, and one block's full gradients (fp32)
    before their reduce-scatter.
    """
    terms = {c: step.at_peak.get(c, 0) for c in CATEGORIES}
    if world_size <= 1 or strategy == "none":
        return terms
    trainable = sum(tensor_bytes(p) for p in model.parameters() if p.requires_grad)
    if strategy == "ddp":
        terms["collectives"] = trainable  # gradient buckets, allocated once
        return terms
    blocks = list(getattr(model, "blocks", []))
    block_bytes = [sum(p.numel() for p in b.parameters()) for b in blocks]
    total = sum(p.numel() for p in model.parameters())
    size = torch.finfo(param_dtype).bits // 8 if param_dtype is not None else 4
    biggest = max(block_bytes, default=0)
    root = total - sum(block_bytes)
    for c in ("weights", "gradients", "optimizer"):
        terms[c] = math.ceil(terms[c] / world_size)
    terms["collectives"] = (root + 2 * biggest) * size + biggest * 4
    return terms


# ------------------------------------------------------------------------------------------ building blocks


def rank_batch(batch: dict[str, torch.Tensor], world_size: int) -> dict[str, torch.Tensor]:
    """The slice of a global batch one of ``world_size`` processes takes (trainwell/distributed)."""
    if world_size <= 1:
        return batch
    return {k: v[: max(1, len(v) // world_size)] if isinstance(v, torch.Tensor) and v.dim() else v
            for k, v in batch.items()}


def batch_size(batch: dict[str, torch.Tensor]) -> int:
    first = next((v for v in batch.values() if isinstance(v, torch.Tensor) and v.dim()), None)
    return int(first.shape[0]) if first is not None else 0


def held_bytes(*roots: Any, skip: tuple[type, ...] = (torch.nn.Module,), limit: int = 200_000) -> int:
    """Bytes of the arrays and tensors reachable from ``roots`` (each storage once), not entering
    modules: the data a source and its evaluation batches keep in memory."""
    import types

    import numpy as np

    seen_objects: set[int] = set()
    seen_buffers: set[int] = set()
    total, stack, visited = 0, list(roots), 0
    while stack and visited < limit:
        obj = stack.pop()
        if id(obj) in seen_objects or isinstance(obj, (str, bytes, int, float, bool, type(None), type,
                                                        types.ModuleType, *skip)):
            continue
        seen_objects.add(id(obj))
        visited += 1
        if isinstance(obj, torch.Tensor):
            for st in [obj.untyped_storage()] if obj.device.type != "meta" else []:
                if id(st) not in seen_buffers:
                    seen_buffers.add(id(st))
                    total += st.nbytes()
            continue
        if isinstance(obj, np.ndarray):
            base = obj
            while isinstance(base.base, np.ndarray):
                base = base.base
            if id(base) not in seen_buffers:
                seen_buffers.add(id(base))
                total += base.nbytes
            continue
        if isinstance(obj, dict):
            stack.extend(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        elif isinstance(obj, types.MethodType):
            stack.append(obj.__self__)
        elif isinstance(obj, types.FunctionType):
            stack.extend(c.cell_contents for c in obj.__closure__ or () if _filled(c))
        else:
            stack.extend(getattr(obj, "__dict__", {}).values())
            for name in getattr(type(obj), "__slots__", ()):
                if hasattr(obj, name):
                    stack.append(getattr(obj, name))
    return total


def _filled(cell: Any) -> bool:
    try:
        cell.cell_contents
    except ValueError:
        return False
    return True


@dataclass
class Built:
    """Resident memory before and after the build, so admission knows what is already taken."""

    rss_before: int = 0
    rss_after: int = 0

    @property
    def grew(self) -> int:
        return max(0, self.rss_after - self.rss_before)


@contextlib.contextmanager
def build_guard(cfg: Config, device: torch.device, built: Built | None = None) -> Iterator[Built]:
    """Stop building the Job (model and data) and its adapters as soon as their tensors exceed the
    free memory, before the weights are written (``torch.empty`` reserves them, the initialiser would
    touch them). Yields the resident memory before and after, for :func:`admit`.

    The tensors a build allocates are counted as they are made; numpy arrays of the data are not
    (a file's contents fit once they are read). ``built``: the record of an earlier part of the same
    build, continued (the Trainer times the precision probe between two parts: outside the counting,
    which would slow every operator it times).
    """
    built = built or Built(rss_before=rss_bytes())
    host = host_free()
    budgets = {"cpu": max(0, host.bytes // local_processes())}
    if device.type == "cuda":
        budgets["cuda"] = device_free(device).bytes
    tracker = LiveTensors(budgets=budgets) if cfg.train.memory_check else contextlib.nullcontext()
    try:
        with tracker:
            yield built
    except OverBudget as e:
        where = host.source if e.device == "cpu" else device_free(device).source
        raise DoesNotFit(too_big(f"more than the {size_text(e.budget)} of {e.device} memory that is free ({where})")) \
            from None
    except (MemoryError, RuntimeError) as e:  # one tensor bigger than the allocator can give
        if isinstance(e, RuntimeError) and "allocate" not in str(e):
            raise
        raise DoesNotFit(too_big(f"a tensor the allocator refused ({str(e).splitlines()[0][-120:]})")) from None
    built.rss_after = rss_bytes()


def too_big(what: str) -> str:
    return (f"building the model and data needs {what}: the weights alone do not fit — shrink the model (model.*) "
            f"or run on a machine with more memory (train.memory_check = false skips this check).")


# ------------------------------------------------------------------------------------------ the plan


def simulate(cfg: Config, job: Job, precision: Precision, device: torch.device, *, world_size: int, strategy: str,
             count_flops: bool, batch: dict[str, torch.Tensor] | None = None
             ) -> tuple[StepMemory, dict[str, torch.Tensor]]:
    if batch is None:
        batch = first_batch(job, world_size)
    step = simulate_step(job.model, job.objective, batch, precision=precision, optim=cfg.optim,
                         grad_accum=cfg.train.grad_accum, device=device, count_flops=count_flops)
    return step, batch


def first_batch(job: Job, world_size: int) -> dict[str, torch.Tensor]:
    """One process's share of the source's first batch (real tensors; making it may run real work,
    e.g. a DPO reference's log-probs computed once)."""
    return rank_batch(peek_batch(job.source, job.model), world_size)


def make_plan(cfg: Config, job: Job, precision: Precision, device: torch.device, *, world_size: int = 1,
              strategy: str = "none", full: bool = False, batch: dict[str, torch.Tensor] | None = None) -> Plan:
    """The plan of the configured step; ``full`` adds the other activation-checkpointing setting,
    inference, FLOPs and time (what `trainwell plan` prints)."""
    from trainwell.engine.machine import device_name

    model = job.model
    step, batch = simulate(cfg, job, precision, device, world_size=world_size, strategy=strategy, count_flops=full,
                           batch=batch)
    terms = per_rank(step, model, strategy, world_size, precision.dtype)
    n = sum(p.numel() for p in model.parameters())
    free = device_free(device)
    plan = Plan(device=str(device), device_name=device_name(device), precision=precision.name,
                world_size=world_size, strategy=strategy if world_size > 1 else "none", parameters=n,
                trainable=sum(p.numel() for p in model.parameters() if p.requires_grad), batch=batch_size(batch),
                grad_accum=cfg.train.grad_accum, step=terms, peak=sum(terms.values()),
                activation_checkpointing=cfg.train.activation_checkpointing,
                data=held_bytes(job.source, job.eval_batches, job.extra_evals),
                weights=sum(tensor_bytes(t) for t in [*model.parameters(), *model.buffers()]),
                free=free.bytes, free_source=free.source)
    if full:
        plan.flops_per_step = step.flops * world_size
        plan.flops_formula = job.flops_per_unit * batch_size(batch) * world_size * cfg.train.grad_accum * (
            _sequence_length(batch))
        plan.total_steps = total_steps(cfg, job)
        from trainwell.engine.peak import peak_flops

        plan.matmul_peak = peak_flops(device, precision.dtype or torch.float32)
        _other_checkpointing(plan, cfg, job, precision, device, batch, world_size, strategy)
        try:
            inf = simulate_inference(model, job.objective, job.eval_batches[0] if job.eval_batches else batch,
                                     precision=precision, device=device)
            plan.inference = asdict(inf)
        except CannotSimulate as e:
            plan.notes.append(f"inference not simulated: {e}")
    return plan


def _sequence_length(batch: dict[str, torch.Tensor]) -> int:
    ids = batch.get("input")
    return int(ids.shape[1]) if isinstance(ids, torch.Tensor) and ids.dim() == 2 else 1


def _other_checkpointing(plan: Plan, cfg: Config, job: Job, precision: Precision, device: torch.device,
                         batch: dict[str, torch.Tensor], world_size: int, strategy: str) -> None:
    """The step with activation checkpointing the other way round (every block when it is off)."""
    from trainwell.engine.wrap import apply_activation_checkpointing, remove_activation_checkpointing

    if getattr(job.model, "blocks", None) is None:
        return
    k = cfg.train.activation_checkpointing
    other = 0 if k else 1
    remove_activation_checkpointing(job.model)
    if other:
        apply_activation_checkpointing(job.model, other)
    try:
        step = simulate_step(job.model, job.objective, batch, precision=precision, optim=cfg.optim,
                             grad_accum=cfg.train.grad_accum, device=device)
    finally:
        remove_activation_checkpointing(job.model)
        if k:
            apply_activation_checkpointing(job.model, k)
    plan.other = per_rank(step, job.model, strategy, world_size, precision.dtype)
    plan.other_peak, plan.other_checkpointing = sum(plan.other.values()), other


def plan_run(cfg: Config, build: Callable[[Config, torch.device], Job], device: torch.device, *,
             world_size: int = 1) -> Plan:
    """`trainwell plan`: the Trainer's build (model, data, adapters, activation checkpointing; no
    optimizer, nothing trained) and the full plan of one of its steps."""
    from trainwell.engine.prepare import prepare_model
    from trainwell.engine.state import seed_everything
    from trainwell.engine.wrap import apply_activation_checkpointing

    if world_size > 1:
        from trainwell.distributed.world import check

        check(cfg)
        if cfg.train.batch_size % world_size:
            raise ConfigError(f"train.batch_size = {cfg.train.batch_size} is the global batch and must split evenly "
                              f"over {world_size} processes; use a multiple of {world_size}.")
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    seed_everything(cfg.train.seed)
    with build_guard(cfg, device) as built:
        job = build(cfg, device)
    precision = Precision(choose_precision(cfg, job.model, device)[0], device)  # "auto" as the Trainer decides
    with build_guard(cfg, device, built):
        adapted, notes = prepare_model(cfg, job.model, precision.dtype)
    if cfg.train.activation_checkpointing:
        apply_activation_checkpointing(job.model, cfg.train.activation_checkpointing)
    strategy = cfg.distributed.strategy if world_size > 1 else "none"
    plan = make_plan(cfg, job, precision, device, world_size=world_size, strategy=strategy, full=True)
    plan.notes = [n for n in notes if n.startswith("note:")] + plan.notes
    return plan


# ------------------------------------------------------------------------------------------ admission


def admit(cfg: Config, job: Job, precision: Precision, strategy: Any, device: torch.device, built: Built,
          notes: list[str]) -> Plan | None:
    """Refuse, with one sentence, a run whose training step cannot fit in the memory that is free now.

    Called by the Trainer after the model, data and adapters exist and before the optimizer state
    and the first step's activations do. What the build made resident is already off the free
    figure; what it holds but the kernel has not handed out yet (a replay buffer of zeros fills as it
    trains) is not, so it counts. On CPU every process of the run on this machine takes its share of
    the same RAM.
    """
    if not cfg.train.memory_check:
        return None
    name = strategy.name if strategy.size > 1 else "none"
    try:
        batch = first_batch(job, strategy.size)  # here: what making it computes stays with this process
        plan = admission_plan(lambda: make_plan(cfg, job, precision, device, world_size=strategy.size, strategy=name,
                                                batch=batch), device)
    except CannotSimulate as e:
        notes.append(f"note: the memory check was skipped: {e} (train.memory_check = false turns it off)")
        return None
    weights = sum(tensor_bytes(t) for t in [*job.model.parameters(), *job.model.buffers()])
    step_more = max(0, plan.peak - weights)  # the weights exist already (FSDP: the full ones, before sharding)
    lazy = max(0, plan.data + (weights if device.type == "cpu" else 0) - built.grew)
    checks = [(device, step_more + (lazy if device.type == "cpu" else 0))]
    if device.type != "cpu" and lazy:
        checks.append((torch.device("cpu"), lazy))
    for where, more in checks:
        if where.type == "cpu":
            more *= local_processes()
        free = device_free(where)
        if more > free.bytes:
            raise DoesNotFit(refusal(cfg, plan, more, free, job))
        if where.type == "cpu" and more * malloc.SLACK > free.bytes and malloc.return_freed_memory():
            notes.append(f"note: the step fits in the {size_text(free.bytes)} free only without the memory glibc "
                         f"keeps for reuse, so freed memory now goes back to the kernel at once (slower page "
                         f"faults; trainwell/diagnostics/malloc.py)")
    return plan


def can_fork(device: torch.device) -> bool:
    return (sys.platform == "linux" and device.type == "cpu" and "torch._dynamo" not in sys.modules
            and not torch.cuda.is_initialized())


def admission_plan(plan: Callable[[], Plan], device: torch.device, timeout: float = 300.0) -> Plan:
    """``plan()``, in a forked copy of this process where that is safe (Linux, CPU, no CUDA yet, and
    ``torch._dynamo`` not imported yet), else here.

    The fake-tensor simulation imports ``torch._dynamo`` (``FakeTensorMode`` reads its config), which
    stays resident for the rest of the run: +70 MiB, more than the whole step of a small model
    (bench/RESULTS.md, issue 13, session 16). In a child that memory ends with it; the child shares the
    parent's pages until it writes them, and it lives for the simulation only. It runs on one thread:
    the parent's OpenMP threads do not exist in it (libgomp hangs on a parallel region there). A child
    that fails, dies or outlives ``timeout`` is killed and the plan is made here instead, so the check
    itself never changes.
    """
    if not can_fork(device):
        return plan()
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: make the plan, send it, and leave without running the parent's exit code
        code = 1
        try:
            os.close(r)
            torch.set_num_threads(1)
            try:
                out: tuple[str, Any] = ("plan", plan())
            except CannotSimulate as e:
                out = ("cannot", str(e))
            with os.fdopen(w, "wb") as f:
                f.write(pickle.dumps(out))
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    data, deadline = b"", time.monotonic() + timeout
    try:
        while (left := deadline - time.monotonic()) > 0 and select.select([r], [], [], left)[0]:
            chunk = os.read(r, 1 << 20)
            if not chunk:
                break
            data += chunk
        else:
            os.kill(pid, signal.SIGKILL)
    finally:
        os.close(r)
        os.waitpid(pid, 0)
    try:
        kind, value = pickle.loads(data)
    except Exception:  # nothing (or half) came back: the child failed in a way the parent reproduces here
        return plan()
    if kind == "cannot":
        raise CannotSimulate(value)
    return value


def biggest_term(terms: dict[str, int]) -> str:
    return max(terms, key=lambda k: terms[k])


def refusal(cfg: Config, plan: Plan, more: int, free: Free, job: Job) -> str:
    """One sentence: how much is needed and free, the biggest term and the knob that shrinks it."""
    term = biggest_term(plan.step)
    knobs = knob(term, cfg, job)
    each = f" ({plan.world_size} processes on this machine)" if plan.world_size > 1 and plan.device == "cpu" else ""
    return (f"this run needs {size_text(more)} more {plan.device} memory for a training step{each} but only "
            f"{size_text(free.bytes)} is free ({free.source}); the biggest term is {TERM_NAMES[term]} "
            f"({size_text(plan.step[term])} per process): {knobs}. `trainwell plan` shows every term; "
            f"train.memory_check = false skips this check.")


TERM_NAMES = {"weights": "the weights", "gradients": "the gradients", "optimizer": "the optimizer state",
              "activations": "the activations", "temporaries": "the temporary buffers of the backward pass",
              "collectives": "the buffers of the collectives"}


def knob(term: str, cfg: Config, job: Job) -> str:
    """The settings that shrink ``term``, in the order to try them."""
    if term in ("activations", "temporaries"):
        out = [f"lower train.batch_size (now {cfg.train.batch_size}; train.grad_accum keeps the batch per step)"]
        if hasattr(cfg.data, "context"):
            out.append(f"data.context (now {cfg.data.context})")
        if getattr(job.model, "blocks", None) is not None and cfg.train.activation_checkpointing != 1:
            out.append("set train.activation_checkpointing = 1")
        return ", ".join(out[:-1]) + f" or {out[-1]}" if len(out) > 1 else out[0]
    if term in ("gradients", "optimizer"):
        return ("train fewer weights (adapter.method = 'lora') or shard them over processes "
                "(--nproc N with distributed.strategy = 'fsdp')")
    if term == "collectives":
        return "use distributed.strategy = 'fsdp' or fewer, larger processes"
    return ("shrink the model (model.*), keep its base in 4 bits (adapter.method = 'qlora'), or shard it "
            "(--nproc N with distributed.strategy = 'fsdp')")
