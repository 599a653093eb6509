"""An eager run never imports torch._dynamo (+70 MiB resident): torch's optimizer wrappers are
skipped with the same update and state dict, and the admission check's fake-tensor simulation runs
in a forked child that takes its imports with it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from trainwell.engine import plan as plan_mod
from trainwell.engine.eager_optim import SGD, AdamW
from trainwell.engine.simulate import CannotSimulate

CPU = torch.device("cpu")


def two_models():
    torch.manual_seed(0)
    a = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 3))
    b = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.GELU(), torch.nn.Linear(8, 3))
    b.load_state_dict(a.state_dict())
    return a, b


def train(model, opt, steps: int, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        x = torch.randn(5, 6, generator=g)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("ours,theirs,kw", [
    (AdamW, torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1, "fused": True}),
    (AdamW, torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.1, "foreach": False}),
    (SGD, torch.optim.SGD, {"lr": 1e-2, "momentum": 0.9, "foreach": True}),
])
def test_same_update_and_state_dict_as_torch(ours, theirs, kw):
    a, b = two_models()
    oa, ob = ours(a.parameters(), **kw), theirs(b.parameters(), **kw)
    train(a, oa, 4)
    train(b, ob, 4)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    # each loads the other's state dict, and the next steps stay identical
    sa, sb = oa.state_dict(), ob.state_dict()
    oa.load_state_dict(sb)
    ob.load_state_dict(sa)
    train(a, oa, 3, seed=2)
    train(b, ob, 3, seed=2)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert not any(p.grad is not None and p.grad.requires_grad for p in a.parameters())


def test_the_step_runs_without_grad_and_keeps_hooks():
    a, _ = two_models()
    opt = AdamW(a.parameters(), lr=1e-2)
    seen = []
    opt.register_step_post_hook(lambda o, args, kw: seen.append(torch.is_grad_enabled()))
    train(a, opt, 1)
    assert seen == [True]  # the hook runs, after the step gave grad mode back


@pytest.fixture
def forking(monkeypatch):
    monkeypatch.setattr(plan_mod, "can_fork", lambda device: True)


def test_the_plan_comes_back_from_the_child(forking):
    parent = os.getpid()
    assert plan_mod.admission_plan(lambda: ("made in", os.getpid() != parent), CPU) == ("made in", True)


def test_cannot_simulate_crosses_as_itself(forking):
    def plan():
        raise CannotSimulate("an operator without a fake implementation")

    with pytest.raises(CannotSimulate, match="without a fake"):
        plan_mod.admission_plan(plan, CPU)


def test_a_failing_or_hanging_child_falls_back_to_the_parent(forking):
    parent = os.getpid()
    calls = []

    def fails_there():
        if os.getpid() != parent:
            raise ValueError("only in the child")
        calls.append("here")
        return "made here"

    assert plan_mod.admission_plan(fails_there, CPU) == "made here" and calls == ["here"]

    def hangs_there():
        if os.getpid() != parent:
            time.sleep(60)
        return "made here"

    start = time.monotonic()
    assert plan_mod.admission_plan(hangs_there, CPU, timeout=1.0) == "made here"
    assert time.monotonic() - start < 30  # killed at the timeout, not waited for


def test_an_eager_run_never_imports_dynamo(tiny, tmp_path):
    """A fresh interpreter (the test workers have imported dynamo): build with the memory check on,
    train, checkpoint, resume, train on; torch._dynamo must not be in sys.modules at the end."""
    sets = tiny(train__steps=4, eval__every=0, checkpoint__every=2, train__memory_check=True)
    script = textwrap.dedent("""
        import json, sys
        import trainwell
        t = trainwell.trainer("default", json.loads(sys.argv[2]), run_dir=sys.argv[1])
        planned = t.plan is not None
        t.fit(2)
        t.close()
        t = trainwell.trainer("default", ["train.steps=4"], resume=sys.argv[1])
        t.fit(2)
        t.close()
        print("RESULT", json.dumps({"planned": planned, "dynamo": "torch._dynamo" in sys.modules}))
    """)
    out = subprocess.run([sys.executable, "-c", script, str(tmp_path / "run"), json.dumps(sets)], capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.split("RESULT ", 1)[1])
    assert result == {"planned": True, "dynamo": False}
