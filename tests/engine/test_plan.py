"""The memory plan: a simulated step measures what the real one allocates, the check before every run
refuses what cannot fit (one sentence, exit 2, nothing allocated) and changes nothing in a run it
admits; `trainwell plan` prints it for every paradigm."""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path

import pytest
import torch

import trainwell
from trainwell.config.schema import GPTConfig, OptimConfig
from trainwell.diagnostics import available
from trainwell.diagnostics.available import Free
from trainwell.diagnostics.tracker import LiveTensors
from trainwell.engine import plan as plan_mod
from trainwell.engine.plan import DoesNotFit
from trainwell.engine.precision import Precision
from trainwell.engine.simulate import simulate_step
from trainwell.engine.wrap import apply_activation_checkpointing
from trainwell.models.gpt import GPT
from trainwell.objectives import lm_loss, mlm_loss

CPU = torch.device("cpu")
BYO = Path(__file__).parents[1] / "paradigms"


def real_step_peak(model, objective, batch, precision, steps=2):
    """What the same steps allocate for real, counted by the same tracker (tensors, not RSS)."""
    from trainwell.engine.optim import build_optimizer

    opt = build_optimizer(model, OptimConfig(), CPU)
    tracker = LiveTensors()
    with tracker:
        for _ in range(steps):
            tracker.phase = "activations"
            with precision.autocast():
                out = objective(model, batch)
            tracker.phase = "temporaries"
            out.loss.backward()
            del out
            tracker.phase = "optimizer"
            opt.step()
            opt.zero_grad(set_to_none=True)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    return tracker.peak["cpu"] + weights


@pytest.mark.parametrize("precision,checkpointing,objective", [("fp32", 0, "lm"), ("bf16", 0, "lm"), ("fp32", 1, "lm"),
                                                                ("fp32", 0, "mlm")])
def test_simulated_step_counts_what_the_real_step_allocates(precision, checkpointing, objective):
    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layer=2, n_head=2, n_embd=32, context=64), 40)
    if checkpointing:
        apply_activation_checkpointing(model, checkpointing)
    x = torch.randint(0, 40, (8, 64))
    target = x.clone()
    if objective == "mlm":  # only some positions are predicted: a shape that depends on the batch's values
        target[torch.rand(x.shape, generator=torch.Generator().manual_seed(1)) > 0.15] = -100
    batch = {"input": x, "target": target}
    fn = lm_loss if objective == "lm" else mlm_loss
    p = Precision(precision, CPU)
    rng = torch.get_rng_state()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    sim = simulate_step(model, fn, batch, precision=p, optim=OptimConfig(), grad_accum=1, device=CPU)
    # the simulation leaves the model and the random streams as they were
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(q.grad is None for q in model.parameters())
    real = real_step_peak(model, fn, batch, p)
    assert abs(sim.peak - real) <= 0.02 * real, (sim.peak, real)
    assert sum(sim.at_peak.values()) == sim.peak
    assert sim.at_peak["optimizer"] > 0  # the second step has the AdamW moments the first one made


def tiny_fixed(tiny):
    return tiny(eval__samples=0, checkpoint__every=100, log__tensorboard=False, log__plots=False,
                train__memory_check=True)


def test_plan_command_prints_every_term(cli, cli_here, tiny):
    args = [a for s in tiny_fixed(tiny) for a in ("--set", s)]
    out = cli("plan", *args)
    assert out.returncode == 0, out.stderr
    for word in ("parameters", "FLOPs per step", "weights", "gradients", "optimizer state", "activations",
                 "temporary buffers", "KV cache", "inference", "generation", "ckpt every 1", "fits"):
        assert word in out.stdout, out.stdout
    as_json = json.loads(cli_here("plan", "--json", *args).stdout)  # the same command, in this process
    assert as_json["peak"] > as_json["step"]["weights"] > 0
    assert as_json["other_peak"] < as_json["peak"]  # checkpointing every block saves activation memory
    fsdp = json.loads(cli_here("plan", "--json", "--nproc", "2", *args, "--set", "distributed.strategy=fsdp").stdout)
    assert fsdp["batch"] == as_json["batch"] // 2
    assert fsdp["step"]["optimizer"] == pytest.approx(as_json["step"]["optimizer"] / 2, rel=0.01)


PLANNED = {  # every paradigm, tiny
    "mlm": ("code_mlm", None),
    "cnn": ("digits_cnn", ["model.channels=[8,16]"]),
    "flow": ("digits_density", ["model.couplings=2", "model.hidden=32", "objective.gmm_components=[1]"]),
    "simclr": ("digits_cluster", ["model.channels=[8]", "model.embed_dim=16", "model.proj_dim=8"]),
    "ppo": ("cartpole_ppo", ["model.normalize_obs=true", "data.video=false"]),
    "dqn": ("cartpole_dqn", ["data.learning_starts=100", "data.video=false"]),
    "byo": (str(BYO / "byo.toml"), []),
}


@pytest.mark.parametrize("case", sorted(PLANNED))
def test_plan_for_every_paradigm(case, tiny, monkeypatch):
    monkeypatch.syspath_prepend(str(BYO))
    recipe, sets = PLANNED[case]
    plan = trainwell.plan(recipe, tiny(eval__samples=0) if sets is None else sets + ["train.threads=1"])
    assert plan.parameters > 0 and plan.batch > 0
    assert plan.peak > plan.step["weights"] > 0 and plan.flops_per_step > 0
    assert plan.inference and plan.inference["forward"] >= plan.step["weights"]


# the same run with the check on and off: bit for bit the same (the plan draws a batch and rewinds
# the source, and must leave every random stream, buffer and environment as it found them)
SAME = {
    "gpt": ("default", None),
    "mlm": ("code_mlm", None),
    "cnn": ("digits_cnn", ["model.channels=[8,16]", "train.batch_size=32"]),
    "ppo": ("cartpole_ppo", ["model.normalize_obs=true", "data.normalize_reward=true", "data.video=false",
                             "data.total_env_steps=2000", "eval.stop_metric=''"]),
    "dqn": ("cartpole_dqn", ["data.learning_starts=100", "data.collect_steps=32", "data.updates_per_collect=4",
                             "data.video=false", "data.total_env_steps=600", "eval.stop_metric=''"]),
}


@pytest.mark.parametrize("case", sorted(SAME))
def test_memory_check_changes_nothing(case, tiny, tmp_path):
    recipe, sets = SAME[case]
    sets = tiny(model__dropout=0.1) if sets is None else sets + ["train.threads=1", "log.progress=off"]
    states = []
    for check in ("true", "false"):
        with trainwell.trainer(recipe, [*sets, f"train.memory_check={check}"], run_dir=tmp_path / check) as t:
            assert (t.plan is not None) == (check == "true")
            t.fit(6)
            states.append({k: v.clone() for k, v in t.model.state_dict().items()})
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_the_issue_example_gets_one_sentence_and_allocates_nothing(cli, tmp_path):
    """`--set data.context=100000 --set train.steps=2` grew to 22 GB and was OOM-killed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    out = cli("train", "--run-dir", str(tmp_path / "r"), "--set", "data.context=100000", "--set", "train.steps=2")
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, out.stderr
    assert "the activations" in lines[0] and "data.context" in lines[0] and "train.memory_check = false" in lines[0]
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    assert max(peak_kb, before) < 2_000_000, peak_kb  # under 2 GB, and the children's peak includes this one


def free_of(n):
    return lambda *a, **k: Free(n, "a test's budget")


def test_a_step_that_cannot_fit_is_refused_and_the_override_runs_it(tiny, tmp_path, monkeypatch):
    sets = tiny_fixed(tiny)
    with trainwell.trainer("default", sets, run_dir=tmp_path / "a") as t:
        need = t.plan.peak
    monkeypatch.setattr(plan_mod, "device_free", free_of(need // 4))
    with pytest.raises(DoesNotFit) as e:
        trainwell.trainer("default", sets, run_dir=tmp_path / "b")
    text = str(e.value)
    assert "the activations" in text and "train.batch_size" in text and "activation_checkpointing" in text
    with trainwell.trainer("default", [*sets, "train.memory_check=false"], run_dir=tmp_path / "c") as t:
        t.fit(1)


def test_weights_that_cannot_fit_stop_the_build_before_they_are_written(tiny, tmp_path, monkeypatch):
    monkeypatch.setattr(plan_mod, "host_free", free_of(50 * 2**20))  # 50 MiB; the model needs 800 MB
    before = available.rss_bytes()
    with pytest.raises(DoesNotFit, match="the weights alone do not fit"):
        trainwell.trainer("default", tiny(model__n_embd=1024, model__n_layer=16, model__n_head=8,
                                          train__memory_check=True),
                          run_dir=tmp_path / "big")
    assert available.rss_bytes() - before < 200 * 2**20


def test_the_refusal_names_the_biggest_term_and_its_knob():
    cfg = trainwell.load_config("default")
    plan = plan_mod.Plan(device="cpu", device_name="x", precision="fp32", world_size=1, strategy="none",
                         parameters=1, trainable=1, batch=32, grad_accum=1, peak=10,
                         step={"weights": 7, "gradients": 1, "optimizer": 1, "activations": 1, "temporaries": 0},
                         activation_checkpointing=0)
    job = type("J", (), {"model": torch.nn.Linear(1, 1)})()
    text = plan_mod.refusal(cfg, plan, 10, Free(1, "MemAvailable"), job)
    assert "the weights" in text and "adapter.method = 'qlora'" in text and "fsdp" in text
    plan.step = {"weights": 1, "gradients": 1, "optimizer": 7, "activations": 1, "temporaries": 0}
    assert "adapter.method = 'lora'" in plan_mod.refusal(cfg, plan, 10, Free(1, "x"), job)


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_cgroup_limits_v2_and_v1(tmp_path):
    v2 = tmp_path / "v2"
    proc = write(v2 / "proc", "0::/job/step\n")
    write(v2 / "job" / "memory.max", str(8 * 2**30))
    write(v2 / "job" / "memory.current", str(3 * 2**30))
    write(v2 / "job" / "memory.stat", f"anon 1\ninactive_file {2**30}\n")
    write(v2 / "job" / "step" / "memory.max", "max")  # no limit here: the parent's counts
    free = available.cgroup_free(v2, proc)
    assert free is not None and free.bytes == 6 * 2**30 and "job" in free.source
    v1 = tmp_path / "v1"
    proc = write(v1 / "proc", "4:memory:/docker/abc\n3:cpu:/docker/abc\n")
    write(v1 / "memory" / "docker" / "abc" / "memory.limit_in_bytes", str(4 * 2**30))
    write(v1 / "memory" / "docker" / "abc" / "memory.usage_in_bytes", str(2**30))
    write(v1 / "memory" / "memory.limit_in_bytes", "9223372036854771712")  # the root: unlimited
    assert available.cgroup_free(v1, proc).bytes == 3 * 2**30
    # a container that sees only its own cgroup at the mount point
    proc = write(tmp_path / "v1b" / "proc", "4:memory:/hidden/path\n")
    write(tmp_path / "v1b" / "memory" / "memory.limit_in_bytes", str(2**30))
    write(tmp_path / "v1b" / "memory" / "memory.usage_in_bytes", "0")
    assert available.cgroup_free(tmp_path / "v1b", proc).bytes == 2**30
    assert available.cgroup_free(tmp_path / "none", tmp_path / "missing") is None


def test_an_unexpected_exception_is_one_sentence_and_a_log(cli, tmp_path):
    (tmp_path / "broken_model.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.lin = torch.nn.Linear(4, 1)\n"
        "    def forward(self, x):\n"
        "        raise RuntimeError('shapes do not line up')\n"
        "def build(section, **facts):\n"
        "    return Net()\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text((BYO / "byo.toml").read_text().replace('name = "test_byo:build"', 'name = "broken_model:build"'))
    env_path = f"{BYO}:{tmp_path}"
    import os

    import forked

    out = forked.run(["train", str(recipe), "--run-dir", str(tmp_path / "run")], cwd=tmp_path,
                     env={**os.environ, "PYTHONPATH": f"{env_path}:{os.environ.get('PYTHONPATH', '')}"})
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "RuntimeError: shapes do not line up" in out.stderr and "error.log" in out.stderr
    log = (tmp_path / "run" / "error.log").read_text()
    assert "Traceback" in log and "shapes do not line up" in log


def test_a_tight_fit_makes_malloc_return_freed_memory(tiny, tmp_path, monkeypatch):
    sets = tiny_fixed(tiny)
    with trainwell.trainer("default", sets, run_dir=tmp_path / "a") as t:
        more = t.plan.peak - t.plan.step["weights"]
    switched = []
    monkeypatch.setattr(plan_mod.malloc, "return_freed_memory", lambda: switched.append(1) or True)
    monkeypatch.setattr(plan_mod, "device_free", free_of(int(more * 1.3)))  # fits, but not with glibc's slack
    with trainwell.trainer("default", sets, run_dir=tmp_path / "b") as t:
        assert switched and any("goes back to the kernel" in n for n in t.notes)
    switched.clear()
    monkeypatch.setattr(plan_mod, "device_free", free_of(more * 100))
    with trainwell.trainer("default", sets, run_dir=tmp_path / "c"):
        assert not switched


def test_return_freed_memory_gives_freed_blocks_back():
    """In fresh processes: 64 MiB freed below small live blocks stays resident under glibc's defaults
    (its mmap threshold grew to 16 MiB), and goes back to the kernel after the switch."""
    import subprocess

    code = (
        "import numpy as np, sys\n"
        "from trainwell.diagnostics import malloc\n"
        "if sys.argv[1] == 'on': assert malloc.return_freed_memory()\n"
        "def rss(): return int(open('/proc/self/statm').read().split()[1]) * 4096\n"
        "a = np.ones(16 * 2**20 // 8); del a\n"
        "r0 = rss()\n"
        "blocks, pins = [], []\n"
        "for i in range(8):\n"
        "    blocks.append(np.ones(8 * 2**20 // 8)); pins.append(np.ones(2000))\n"
        "del blocks\n"
        "print((rss() - r0) // 2**20)\n")
    held = {mode: int(subprocess.run([sys.executable, "-c", code, mode], capture_output=True, text=True,
                                     check=True).stdout) for mode in ("off", "on")}
    assert held["off"] >= 48 and held["on"] <= 8, held
