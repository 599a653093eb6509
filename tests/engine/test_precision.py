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
def fake_probe(tmp_path, monkeypatch):
    """Replace the timed probe by a fake with a given bf16 speed; counts its calls."""
    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path / "cache"))
    calls = []

    def install(bf16_speedup: float):
        def probe(shapes, device):
            calls.append(shapes)
            return 1.0, 1.0 / bf16_speedup  # fp32 seconds, bf16 seconds
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


def test_run_records_and_prints_the_choice(tmp_path, tiny, fake_probe, capsys):
    fake_probe(2.0)
    res = trainwell.train("default", tiny(train__precision="auto", train__steps=4, eval__every=0),
                          run_dir=tmp_path / "run")
    meta = json.loads((res.run_dir / "meta.json").read_text())
    assert meta["precision"] == "bf16" and "2.00x" in meta["precision_reason"]
    assert "precision bf16: auto: bf16 matmuls 2.00x" in capsys.readouterr().out
