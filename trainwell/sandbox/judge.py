"""The verdict on a sandbox reply, decided in the trainer's process.

Statuses, in CodeRL's order of badness (Le et al. 2022 shape rewards by it):

    syntax_error   the program does not compile (reported before any of its code ran)
    error          it raised, crashed, was killed, ran out of a limit, or returned something that
                   is not plain data
    timeout        it did not finish within the wall-clock limit
    failed         it answered, wrongly (a mismatching value, or a failed assertion of the test)
    passed         every expected value matched (calls), or the test's check() returned (check)

For "calls" jobs the expected values live only here: each returned value is rebuilt from plain
data (plain.decode) and compared with :func:`plain.same`. For "check" jobs the test process decided,
out of the candidate's reach; a candidate's own reports can only ever lower its status.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from trainwell.sandbox import plain

STATUSES = ("syntax_error", "error", "timeout", "failed", "passed")
SIGNALS = {6: "SIGABRT", 9: "SIGKILL", 11: "SIGSEGV", 24: "SIGXCPU", 25: "SIGXFSZ", 7: "SIGBUS", 8: "SIGFPE"}


@dataclass
class Outcome:
    status: str
    detail: str = ""                 # one line: the error, the failing test or value
    tests_passed: int = 0            # calls: matching values; check: 1 when passed
    tests: int = 0
    outputs: list[Any] = field(default_factory=list)   # calls: the returned values (None where none came)
    output: str = ""                 # what the program printed (capped)
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        return self.status == "passed"


def stage_error(reports: list[dict[str, Any]]) -> tuple[str, str] | None:
    """(status, detail) when the program failed before its first call."""
    for r in reports:
        if r.get("stage") == "syntax":
            return "syntax_error", str(r.get("error", "SyntaxError"))
        if r.get("stage") == "exec" and "error" in r:
            return "error", str(r["error"])
    return None


def died(reply: dict[str, Any]) -> str:
    codes = [c for c in reply.get("exit", []) if c]
    if not codes:
        return "it ended without answering"
    c = codes[0]
    if c > 128:
        return f"it was killed by {SIGNALS.get(c - 128, f'signal {c - 128}')}"
    return f"it exited with code {c} without answering"


def as_json(value: Any) -> Any:
    """``value`` as JSON would hold it: tuples become lists (for expected values read from JSON files)."""
    t = type(value)
    if t is tuple or t is list:
        return [as_json(v) for v in value]
    if t is dict:
        return {k: as_json(v) for k, v in value.items()}
    return value


def judge_calls(reply: dict[str, Any], expected: list[Any], json_like: bool = False) -> Outcome:
    """The outcome of a calls job whose i-th call should have returned ``expected[i]``
    (``json_like``: expected values came from JSON, so a returned tuple counts as a list)."""
    base = dict(output=reply.get("output", ""), seconds=float(reply.get("seconds", 0.0)), tests=len(expected))
    if "failure" in reply:
        return Outcome("error", reply["failure"], **base)
    reports = reply["reports"]
    early = stage_error(reports)
    if early:
        return Outcome(early[0], early[1], outputs=[None] * len(expected), **base)
    answers = [r for r in reports if "v" in r or "e" in r or r.get("garbled")]
    outputs: list[Any] = []
    first: tuple[str, str] | None = None
    good = 0
    for i, want in enumerate(expected):
        if i >= len(answers):
            outputs.append(None)
            if first is None:
                first = ("timeout", "it did not finish in time") if reply.get("timed_out") else ("error", died(reply))
            continue
        a = answers[i]
        if "v" in a:
            try:
                value = plain.from_tree(a["v"])
            except (ValueError, TypeError, RecursionError):
                outputs.append(None)
                first = first or ("error", f"call {i + 1}: the reply is not plain data")
                continue
            outputs.append(value)
            if plain.same(as_json(value) if json_like else value, want):
                good += 1
            elif first is None:
                first = ("failed", f"call {i + 1}: returned {short(value)}, expected {short(want)}")
        else:
            outputs.append(None)
            first = first or ("error", f"call {i + 1}: {a.get('e', 'a garbled reply')}")
    if first is None:
        return Outcome("passed", "", good, outputs=outputs, **base)
    return Outcome(first[0], first[1], good, outputs=outputs, **base)


def judge_check(reply: dict[str, Any]) -> Outcome:
    """The outcome of a check job: the test process's verdict, read with the candidate's reports."""
    base = dict(output=reply.get("output", ""), seconds=float(reply.get("seconds", 0.0)), tests=1)
    if "failure" in reply:
        return Outcome("error", reply["failure"], **base)
    early = stage_error(reply["reports"])
    if early:
        return Outcome(early[0], early[1], **base)
    v = reply.get("verdict")
    if not isinstance(v, dict):
        if reply.get("timed_out"):
            return Outcome("timeout", "it did not finish in time", **base)
        return Outcome("error", "the test ended without a verdict (it was killed by a limit)", **base)
    if v.get("passed") is True:
        return Outcome("passed", "", 1, **base)
    line = str(v.get("line", ""))
    detail = f"{v.get('error', '')}" + (f" at `{line}`" if line else "")
    if v.get("blame") == "candidate":
        status = "timeout" if reply.get("timed_out") else "error"
        return Outcome(status, detail, **base)
    return Outcome("failed", detail, **base)


def short(value: Any, n: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= n else text[:n - 3] + "..."
