"""Console progress: a live rich bar on a terminal, plain greppable lines otherwise.

Why two modes: a live display is the nicest thing on a terminal, but in CI logs, ``| tee``
or a batch scheduler's output file, carriage returns and ANSI codes turn into garbage. So
when the stream is not a TTY we print one plain line every ``every`` steps instead::

    step  120/2000 | loss 2.3141 | lr 2.94e-03 | 21.3k tok/s | eta 3m12s

The ETA is our own (not rich's): it is measured from the *second* update onwards, because
the first step includes compilation / warm-up and would make the estimate far too long.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

from trainwell.track import fmt

# Metric keys the progress line knows about (the engine's naming contract).
LOSS, LR = "train/loss", "train/lr"
TOKENS_PER_S, SAMPLES_PER_S = "train/tokens_per_s", "train/samples_per_s"


class Progress:
    def __init__(
        self,
        total_steps: int,
        *,
        start_step: int = 0,
        every: int = 10,
        live: bool | None = None,
        stream: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,  # injectable for deterministic tests
    ) -> None:
        self.total = int(total_steps)
        self.every = max(1, int(every))
        # Resolve sys.stdout now, not at import: tests and redirections swap it at runtime.
        self.stream: TextIO = stream if stream is not None else sys.stdout
        if live is None:
            isatty = getattr(self.stream, "isatty", None)
            live = bool(isatty and isatty())
        self.live = live
        self._clock = clock
        self._step = int(start_step)
        # ETA anchor: (time, step) of the first update; the rate is measured after it.
        self._anchor: tuple[float, int] | None = None
        # Last seen value per metric: the engine may pass train metrics only on log steps,
        # while update() is called every step; the display shows the latest known values.
        self._latest: dict[str, float] = {}
        self._closed = False
        self._bar: Any = None
        if self.live:
            self._start_live(start_step)

    # -- live mode ---------------------------------------------------------------------
    def _start_live(self, start_step: int) -> None:
        # rich is light (no torch), but only the live path needs these.
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
        from rich.progress import Progress as RichProgress

        console = Console(file=self.stream, highlight=False)
        self._bar = RichProgress(
            TextColumn("step"),
            MofNCompleteColumn(),
            BarColumn(),
            TextColumn("{task.fields[info]}"),
            console=console,
        )
        self._task = self._bar.add_task("train", total=self.total, completed=start_step, info="")
        self._bar.start()

    # -- public API --------------------------------------------------------------------
    def update(self, step: int, metrics: Mapping[str, float]) -> None:
        if self._closed:
            return
        now = self._clock()
        self._step = int(step)
        for key, value in metrics.items():
            self._latest[key] = float(value)
        if self._anchor is None:
            self._anchor = (now, self._step)
        eta = self._eta(now)
        if self.live:
            self._bar.update(self._task, completed=self._step, info=self._info(eta))
        elif self._step % self.every == 0 or self._step == self.total:
            width = len(str(self.total))
            line = f"step {self._step:>{width}}/{self.total} | {self._info(eta)}"
            self._write(line)

    def message(self, text: str) -> None:
        """A line above the live display (eval results, checkpoint saved, warnings)."""
        if self.live and not self._closed:
            # markup=False: messages like "[eval] loss 2.1" must print literally.
            self._bar.console.print(text, markup=False)
        else:
            self._write(text)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._bar is not None:
            self._bar.stop()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -----------------------------------------------------------------------
    def _eta(self, now: float) -> float | None:
        assert self._anchor is not None
        t0, s0 = self._anchor
        done, elapsed = self._step - s0, now - t0
        if done <= 0 or elapsed <= 0:
            return None  # first update: no rate measured yet
        return (self.total - self._step) * elapsed / done

    def _info(self, eta: float | None) -> str:
        parts: list[str] = []
        m = self._latest
        if LOSS in m:
            parts.append(f"loss {m[LOSS]:.4f}")
        if LR in m:
            parts.append(f"lr {fmt.lr(m[LR])}")
        if TOKENS_PER_S in m:
            parts.append(f"{fmt.human_rate(m[TOKENS_PER_S])} tok/s")
        elif SAMPLES_PER_S in m:
            parts.append(f"{fmt.human_rate(m[SAMPLES_PER_S])} samples/s")
        parts.append(f"eta {fmt.human_duration(eta)}")
        return " | ".join(parts)

    def _write(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()  # a line per log step must reach a piped log file promptly
