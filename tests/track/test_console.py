"""Progress: plain lines off a terminal, ETA from the measured rate, live mode on a TTY."""

import io
import re

from trainwell.track.console import Progress

ANSI = re.compile(r"\x1b\[|\x1b\]|\r")


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _metrics(step: int) -> dict[str, float]:
    return {"train/loss": 5.0 / step, "train/lr": 3e-3, "train/tokens_per_s": 21_300.0}


def test_plain_lines_at_every_and_last_step_with_eta() -> None:
    out, clock = io.StringIO(), FakeClock()
    prog = Progress(25, every=10, stream=out, clock=clock)
    assert not prog.live  # StringIO is not a terminal
    clock.t = 100.0  # the first step is slow (compile); it must not skew the ETA
    for step in range(1, 26):
        prog.update(step, _metrics(step))
        clock.t += 2.0  # then 2 s per step
    prog.close()

    lines = out.getvalue().splitlines()
    assert [int(re.match(r"step\s+(\d+)/25", ln).group(1)) for ln in lines] == [10, 20, 25]
    assert not ANSI.search(out.getvalue())
    # At step 10: 9 steps in 18 s since the first update -> 2 s/step; 15 left -> 30 s.
    assert lines[0] == "step 10/25 | loss 0.5000 | lr 3.00e-03 | 21.3k tok/s | eta 30s"
    assert lines[1].endswith("eta 10s")
    assert lines[2].endswith("eta 0s")


def test_eta_formats_minutes_and_uses_samples_rate() -> None:
    out, clock = io.StringIO(), FakeClock()
    prog = Progress(2000, start_step=100, every=10, stream=out, clock=clock)
    prog.update(101, {"train/loss": 2.0, "train/samples_per_s": 850.0})
    clock.t = 19.0  # 19 steps in 19 s -> 1 step/s, 1880 left
    prog.update(120, {"train/loss": 2.3141})
    line = out.getvalue().strip()
    assert line == "step  120/2000 | loss 2.3141 | 850 samples/s | eta 31m20s"


def test_first_update_has_unknown_eta() -> None:
    out = io.StringIO()
    prog = Progress(10, every=5, stream=out, clock=FakeClock())
    prog.update(5, {"train/loss": 1.0})
    assert out.getvalue().strip().endswith("eta ?")


def test_message_prints_plain_line() -> None:
    out = io.StringIO()
    prog = Progress(10, stream=out)
    prog.message("[eval] val/loss 2.1")
    prog.close()
    assert out.getvalue() == "[eval] val/loss 2.1\n"


def test_live_mode_renders_and_prints_messages() -> None:
    out = io.StringIO()
    prog = Progress(10, live=True, stream=out)
    prog.update(1, _metrics(1))
    prog.message("[ckpt] saved step-1")
    prog.update(10, _metrics(10))
    prog.close()
    text = out.getvalue()
    # Markup must not eat bracketed text; the final refresh shows the finished count.
    assert "[ckpt] saved step-1" in text
    assert "10/10" in text and "loss 0.5000" in text
