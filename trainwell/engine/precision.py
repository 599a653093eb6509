"""Numeric precision applied from outside the model: autocast, (fp16) loss scaling, and the choice.

``train.precision = "auto"`` (the default) picks bf16 only where it is faster on this device:
on a CUDA GPU with native bf16, or on a CPU where a short probe of the model's own matmul shapes
measures bf16 clearly faster than fp32 (AMX CPUs: yes; AVX2-only CPUs emulate bf16 ~20x slower
than fp32). Otherwise fp32. The probe's result is cached per machine (see engine/machine.py).
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from trainwell.engine.machine import cpu_features, machine_key, read_cache, write_cache
from trainwell.errors import ConfigError

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
PROBE_CACHE = "precision_probe.json"
BF16_MARGIN = 1.2  # bf16 must measure at least this much faster: a near tie is not worth bf16's rounding
PROBE_ROWS = 2048  # rows (tokens) per probe matmul at most: representative, and short on slow CPUs
PROBE_SHAPES = 4  # the largest distinct matmul shapes probed (by FLOPs per step)


class Precision:
    def __init__(self, name: str, device: torch.device):
        if name == "fp16" and device.type != "cuda":
            raise ConfigError("train.precision = 'fp16' needs a CUDA GPU (it relies on loss scaling); "
                              "on CPU use 'auto', 'bf16' (fast on AMX CPUs) or 'fp32'.")
        if name not in DTYPES:
            raise ConfigError(f"train.precision = {name!r} must be resolved first (choose_precision); "
                              f"expected one of {', '.join(DTYPES)}.")
        self.name, self.device, self.dtype = name, device, DTYPES[name]
        # fp16's narrow exponent range underflows small gradients; the scaler multiplies the
        # loss up and skips steps whose gradients overflow. bf16 has fp32's range: no scaler.
        self.scaler = torch.amp.GradScaler("cuda") if name == "fp16" else None

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.dtype is None:
            return contextlib.nullcontext()
        stack = contextlib.ExitStack()
        stack.enter_context(torch.autocast(self.device.type, dtype=self.dtype))
        if self.device.type == "cpu" and self.dtype == torch.bfloat16:
            # On CPU the fused (flash) attention kernel is slow in bf16 (its backward took 7x the
            # fp32 time in bench/profile): other models' attention takes the math path, trainwell's
            # GPT the fused kernel in fp32, faster still (trainwell/models/gpt.py, FP32_ATTENTION).
            from torch.nn.attention import SDPBackend, sdpa_kernel

            from trainwell.models.gpt import FP32_ATTENTION

            stack.enter_context(sdpa_kernel([SDPBackend.MATH]))
            stack.callback(FP32_ATTENTION.reset, FP32_ATTENTION.set(True))
        return stack

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()


# ------------------------------------------------------------------------------- the choice


def choose_precision(cfg: Any, model: torch.nn.Module, device: torch.device, *,
                     previous: str | None = None) -> tuple[str, str]:
    """``train.precision`` resolved for this run: (fp32 | bf16 | fp16, the reason in words).

    ``previous``: the precision a resumed run started with (it keeps it, so resuming stays exact).
    With several processes only rank 0 calls this and the strategy hands every rank its answer
    (``Strategy.agree``), so all ranks run in the same precision even if their probes would differ.
    """
    asked = cfg.train.precision
    if asked != "auto":
        Precision(asked, device)  # fp16 without CUDA fails here, with the fix in the message
        return asked, "set by train.precision"
    if previous in ("fp32", "bf16"):
        return previous, "auto, kept from the start of this run (resuming)"
    return decide_auto(cfg, model, device)


def decide_auto(cfg: Any, model: torch.nn.Module, device: torch.device) -> tuple[str, str]:
    """What "auto" resolves to on ``device`` for ``model``, and why."""
    if device.type == "cuda":
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return "bf16", f"auto: {torch.cuda.get_device_name(device)} has native bf16"
        return "fp32", f"auto: {torch.cuda.get_device_name(device)} has no native bf16"
    if device.type != "cpu":
        return "fp32", f"auto: fp32 on {device.type}"
    shapes = matmul_shapes(model, rows_per_step(cfg))
    if not shapes:
        return "fp32", "auto: the model has no linear layers to speed up"
    speedup, cached = bf16_speedup(shapes, device)
    where = f"this CPU ({cpu_features()})"
    how = "cached probe" if cached else "probe"
    if speedup >= BF16_MARGIN:
        return "bf16", f"auto: bf16 matmuls {speedup:.2f}x as fast as fp32 on {where}, {how} of the model's shapes"
    return "fp32", (f"auto: bf16 matmuls {speedup:.2f}x as fast as fp32 on {where} ({how} of the model's "
                    f"shapes; bf16 needs >= {BF16_MARGIN}x)")


def recorded_precision(run_dir: Path) -> str | None:
    """The precision a run recorded in its meta.json when it started (None if none)."""
    try:
        return json.loads((Path(run_dir) / "meta.json").read_text()).get("precision")
    except (OSError, ValueError, AttributeError):
        return None


def rows_per_step(cfg: Any) -> int:
    """Rows of the activations one micro-batch sends through each linear layer (tokens for text)."""
    data = cfg.data
    rows = getattr(data, "minibatch_size", 0) or cfg.train.batch_size
    return max(1, rows * int(getattr(data, "context", 1) or 1))


def matmul_shapes(model: torch.nn.Module, rows: int) -> list[tuple[int, int, int, int]]:
    """(rows, in, out, count) of the model's linear layers, largest total FLOPs first."""
    counts: dict[tuple[int, int], int] = {}
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            key = (m.in_features, m.out_features)
            counts[key] = counts.get(key, 0) + 1
    shapes = [(min(rows, PROBE_ROWS), i, o, n) for (i, o), n in counts.items()]
    return sorted(shapes, key=lambda s: -s[1] * s[2] * s[3])[:PROBE_SHAPES]


def bf16_speedup(shapes: list[tuple[int, int, int, int]], device: torch.device) -> tuple[float, bool]:
    """fp32 time / bf16 time of ``shapes`` on this machine, and whether it came from the cache.

    A probe is cached only when its fp32 matmuls ran at a rate this CPU kind reaches undisturbed
    (engine/peak.py's floor): one taken while other processes held the core is used for this run only.
    """
    from trainwell.engine.peak import floor_per_thread

    key = f"{machine_key(device)}|{';'.join('x'.join(map(str, s)) for s in shapes)}"
    table = read_cache(PROBE_CACHE)
    hit = table.get(key)
    if isinstance(hit, dict) and "speedup" in hit:
        return float(hit["speedup"]), True
    fp32_s, bf16_s = probe_matmuls(shapes, device)
    speedup = fp32_s / max(bf16_s, 1e-12)
    fp32_rate = sum(2 * r * i * o * n for r, i, o, n in shapes) / max(fp32_s, 1e-12)  # one thread
    if fp32_rate >= floor_per_thread(device, torch.float32):
        table[key] = {"speedup": round(speedup, 4), "fp32_s": fp32_s, "bf16_s": bf16_s,
                      "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_cache(PROBE_CACHE, table)
    return speedup, False


@contextlib.contextmanager
def one_thread(device: torch.device) -> Iterator[None]:
    """A CPU probe on one thread: bf16's advantage is a property of each core (AMX tiles, AVX-512 BF16
    units), and one thread is not held up at every matmul by a partner thread that another process
    has descheduled, so a probe on a busy machine still finds undisturbed repetitions."""
    before = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def probe_matmuls(shapes: list[tuple[int, int, int, int]], device: torch.device, *, min_reps: int = 5,
                  seconds: float = 0.04) -> tuple[float, float]:
    """Seconds per step of ``shapes`` (rows, in, out, count) in fp32 and in bf16 on one thread.

    Each shape: fp32 and bf16 interleaved (a burst of other work hits both alike), at least
    ``min_reps`` times and ``seconds`` in all, the fastest of each counts. bf16 includes casting the
    input and the weight, as autocast does. A first small matmul settles a CPU without native bf16
    (emulated bf16 is many times slower) in milliseconds, without timing full-size emulated matmuls.
    """
    g = torch.Generator().manual_seed(0)  # private: probing must not move the global RNG (exact resume)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def timer(x: torch.Tensor, w: torch.Tensor, bf16: bool) -> float:
        t0 = time.perf_counter()
        if bf16:
            F.linear(x.to(torch.bfloat16), w.to(torch.bfloat16))
        else:
            F.linear(x, w)
        sync()
        return time.perf_counter() - t0

    def best(x: torch.Tensor, w: torch.Tensor, reps: int, budget: float) -> tuple[float, float]:
        timer(x, w, False), timer(x, w, True)  # warm-up (oneDNN builds its kernel on the first call)
        fp32, bf16, spent, n = float("inf"), float("inf"), 0.0, 0
        while n < reps or spent < budget:
            a, b = timer(x, w, False), timer(x, w, True)
            fp32, bf16, spent, n = min(fp32, a), min(bf16, b), spent + a + b, n + 1
            if n >= 4 * reps and spent > budget:
                break
        return fp32, bf16

    with torch.inference_mode(), one_thread(device):
        _, i, o, _ = shapes[0]
        x, w = torch.randn(256, i, generator=g).to(device), torch.randn(o, i, generator=g).to(device)
        fp32, bf16 = best(x, w, min_reps, 0.0)
        if bf16 > 2.5 * fp32:  # hopeless: no native bf16
            return fp32, bf16
        total = [0.0, 0.0]
        for rows, i, o, n in shapes:
            x, w = torch.randn(rows, i, generator=g).to(device), torch.randn(o, i, generator=g).to(device)
            fp32, bf16 = best(x, w, min_reps, seconds)
            total[0] += n * fp32
            total[1] += n * bf16
    return total[0], total[1]
