"""train.precision = "auto": bf16 only where it is measured faster; the choice is recorded."""

from __future__ import annotations

import json

import pytest
import torch

import trainwell
from trainwell.config import load_config
from trainwell.engine import precision as prec
from trainwell.engine.precision import Precision, choose_precision
from trainwell.errors import ConfigError
from trainwell.engine.machine import cache_dir
from trainwell.models.gpt import build_gpt

CPU = torch.device("cpu")


@pytest.fixture
def fake_probe(tmp_path, monkeypatch, auto_precision):
    """Replace the timed probe by a fake with a given bf16 speed; counts its calls."""
    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path / "cache"))
    calls = []

    def install(bf16_speedup: float, fp32_flops: float = 100e9):
        def probe(shapes, device):
            calls.append(shapes)
            fp32 = sum(2 * r * i * o * n for r, i, o, n in shapes) / fp32_flops
            return fp32, fp32 / bf16_speedup  # fp32 seconds, bf16 seconds
        monkeypatch.setattr(prec, "probe_matmuls", probe)
        return calls
    return install


def cfg_and_model(precision="auto"):
    cfg = load_config("default", [f"train.precision={precision!r}", "model.n_layer=1", "model.n_embd=32",
                                  "model.n_head=2"])
    return cfg, build_gpt(cfg.model, vocab_size=100, context=cfg.data.context)


def test_auto_picks_bf16_where_the_probe_says_it_is_faster(fake_probe):
    calls = fake_probe(3.0)
    cfg, model = cfg_and_model()
    name, reason = choose_precision(cfg, model, CPU)
    assert name == "bf16" and "3.00x" in reason and "probe of the model's shapes" in reason
    # the shapes probed are the model's own: (rows, in, out, count), rows = batch x context (capped)
    rows = min(cfg.train.batch_size * cfg.data.context, prec.PROBE_ROWS)
    assert (rows, 32, 96, 1) in calls[0] and (rows, 32, 128, 1) in calls[0]
    # a second run on this machine reads the cache instead of probing again
    assert choose_precision(cfg, model, CPU)[0] == "bf16" and len(calls) == 1
    assert "cached probe" in choose_precision(cfg, model, CPU)[1]


def test_auto_keeps_fp32_where_bf16_is_slow_or_a_near_tie(fake_probe):
    fake_probe(0.05)  # an AVX2-only CPU: emulated bf16, ~20x slower
    cfg, model = cfg_and_model()
    name, reason = choose_precision(cfg, model, CPU)
    assert name == "fp32" and "0.05x" in reason
    table = json.loads((cache_dir() / prec.PROBE_CACHE).read_text())
    (key,) = table
    assert torch.__version__ in key and "threads=" in key  # cached per machine and torch version


def test_a_probe_on_a_busy_core_decides_this_run_but_is_not_cached(fake_probe):
    calls = fake_probe(3.0, fp32_flops=1e6)  # far below any CPU's floor: another process had the core
    cfg, model = cfg_and_model()
    assert choose_precision(cfg, model, CPU)[0] == "bf16"
    assert not (cache_dir() / prec.PROBE_CACHE).exists()
    fake_probe(0.05)  # the next run probes again (quietly this time) and caches what it finds
    assert choose_precision(cfg, model, CPU)[0] == "fp32" and len(calls) == 2
    assert "cached probe" in choose_precision(cfg, model, CPU)[1] and len(calls) == 2


def test_cpu_isa_limits_change_the_flags_and_the_cache_key(monkeypatch):
    """ONEDNN_MAX_CPU_ISA=AVX2 (how an AVX2-only CPU is emulated on an AMX one) turns bf16 hardware off."""
    from trainwell.engine import machine

    monkeypatch.setattr(machine, "_cpuinfo", lambda: {"model name": "Fake Xeon",
                                                      "flags": "avx2 fma avx512f avx512_bf16 amx_bf16 amx_tile"})
    for k in machine.ISA_LIMITS:
        monkeypatch.delenv(k, raising=False)
    full = machine.machine_key(CPU)
    assert "amx_bf16" in machine.cpu_features()
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    assert machine.cpu_features() == "avx2+fma" and machine.machine_key(CPU) != full
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")
    assert machine.cpu_features() == "avx2+fma+avx512f+avx512_bf16"


def test_near_tie_stays_fp32(fake_probe):
    fake_probe(1.1)
    assert choose_precision(*cfg_and_model(), CPU)[0] == "fp32"


def test_explicit_precisions_stay_and_fp16_needs_cuda(fake_probe):
    calls = fake_probe(3.0)
    for name in ("fp32", "bf16"):
        cfg, model = cfg_and_model(name)
        assert choose_precision(cfg, model, CPU) == (name, "set by train.precision")
    cfg, model = cfg_and_model("fp16")
    with pytest.raises(ConfigError, match="fp16.*needs a CUDA GPU"):
        choose_precision(cfg, model, CPU)
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        Precision("fp16", CPU)
    assert not calls  # nothing was probed


def test_a_resumed_run_keeps_its_precision(fake_probe):
    calls = fake_probe(3.0)
    cfg, model = cfg_and_model()
    assert choose_precision(cfg, model, CPU, previous="fp32")[0] == "fp32" and not calls


def test_cuda_decision_follows_native_bf16(monkeypatch, fake_probe):
    calls = fake_probe(0.01)
    cfg, model = cfg_and_model()
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d=None: "Fake GPU")
    for native, want in ((True, "bf16"), (False, "fp32")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=native: n)
        name, reason = choose_precision(cfg, model, torch.device("cuda"))
        assert name == want and "Fake GPU" in reason
    assert not calls  # CUDA is decided by its capability, not by the CPU probe


def test_real_probe_is_short_and_positive(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path))
    torch.manual_seed(5)
    expected = torch.rand(2)
    torch.manual_seed(5)
    fp32_s, bf16_s = prec.probe_matmuls([(64, 32, 64, 2), (64, 64, 32, 1)], CPU)
    assert fp32_s > 0 and bf16_s > 0
    assert torch.equal(torch.rand(2), expected)  # the probe leaves the global RNG alone


def test_run_records_prints_and_keeps_the_choice(tmp_path, tiny, fake_probe, capsys):
    fake_probe(2.0)
    with trainwell.trainer("default", tiny(train__precision="auto", train__steps=4, eval__every=0,
                                           checkpoint__every=2), run_dir=tmp_path / "run") as t:
        t.fit(2)  # stopped after the checkpoint of step 2
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["precision"] == "bf16" and "2.00x" in meta["precision_reason"]
    assert "precision bf16: auto: bf16 matmuls 2.00x" in capsys.readouterr().out
    # resumed where bf16 would now lose (another machine, or a cache cleared): it keeps bf16
    calls = fake_probe(0.05)
    probed = len(calls)  # (the fixture counts every probe of this test)
    with trainwell.trainer("default", resume=tmp_path / "run") as t:
        assert t.precision.name == "bf16" and t.loop.step == 2 and len(calls) == probed
        t.fit()
    resumed = json.loads((tmp_path / "run" / "meta-resume-2.json").read_text())
    assert resumed["precision"] == "bf16" and "kept from the start" in resumed["precision_reason"]
    # and so do eval and generate on the run (the recorded precision, not a new probe)
    from trainwell.inference import run_precision, run_config
    from trainwell.paradigms import build_job

    cfg = run_config(tmp_path / "run")
    assert run_precision(cfg, build_job(cfg, CPU), tmp_path / "run", CPU).name == "bf16" and len(calls) == probed


def test_several_ranks_take_rank_zeros_choice(monkeypatch):
    """DataParallel.agree: rank 0 decides (probes), every other rank gets its answer or its error."""
    import contextlib
    from types import SimpleNamespace

    from trainwell.distributed import strategy as dp

    box: list = []  # what rank 0 broadcast; the other rank reads it (the ranks run one after the other here)

    def broadcast(world, obj):
        if world.main:
            box[:] = [obj]
        return box[0]
    monkeypatch.setattr(dp, "broadcast_object", broadcast)
    monkeypatch.setattr(dp, "collective", lambda world, what: contextlib.nullcontext())
    ranks = []
    for main in (True, False):
        r = object.__new__(dp.DataParallel)
        r.world = SimpleNamespace(main=main, size=2)
        ranks.append(r)
    decided = []

    def decide():
        decided.append(1)
        return "bf16", "auto: rank 0's probe"
    assert [r.agree(decide, "choosing the precision") for r in ranks] == [("bf16", "auto: rank 0's probe")] * 2
    assert len(decided) == 1  # only rank 0 probed

    def refuse():
        raise ConfigError("train.precision = 'fp16' needs a CUDA GPU")
    for r in ranks:
        with pytest.raises(ConfigError, match="needs a CUDA GPU"):
            r.agree(refuse, "choosing the precision")


def test_bf16_on_cpu_runs_the_gpts_attention_in_fp32(monkeypatch):
    """Under trainwell's bf16 autocast on CPU the GPT's attention runs in fp32 (torch's fused kernel
    is slow in bf16 there); the rest of the model stays bf16, and the cached path works the same."""
    import torch.nn.functional as F

    from trainwell.engine.generate import generate
    from trainwell.models import gpt

    cfg = load_config("default", ["model.n_layer=1", "model.n_embd=32", "model.n_head=2"]).model
    torch.manual_seed(0)
    m = build_gpt(cfg, vocab_size=20, context=16)
    seen = []
    real = F.scaled_dot_product_attention

    def spy(q, k, v, **kw):
        seen.append(q.dtype)
        return real(q, k, v, **kw)
    monkeypatch.setattr(gpt.F, "scaled_dot_product_attention", spy)
    ids = torch.randint(0, 20, (2, 8))
    with Precision("bf16", torch.device("cpu")).autocast():
        out = m(ids)
        assert out.dtype == torch.bfloat16 and seen == [torch.float32]
        gen = generate(m.eval(), [[1, 2, 3], [4]], max_new_tokens=4, temperature=0.0)  # left-padded prefill, mask
    assert all(len(x) == 4 for x in gen.ids) and seen[1] == torch.float32
    seen.clear()
    out.float().sum().backward()  # the fp32 kernel's backward
    assert m.blocks[0].attn.qkv.weight.grad is not None
    with torch.autocast("cpu", dtype=torch.bfloat16):  # torch's autocast alone: attention as it comes
        m(ids)
    assert seen == [torch.bfloat16]
