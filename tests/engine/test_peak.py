"""The MFU peak: a probe under load is not cached, the best of several counts, MFU stays <= 100 %."""

from __future__ import annotations

import json

import pytest
import torch

from trainwell.engine import peak
from trainwell.engine.machine import cache_dir

CPU = torch.device("cpu")
F32 = torch.float32


@pytest.fixture
def probes(tmp_path, monkeypatch):
    """Fake probes returning the given FLOP/s in turn (the last one repeats); counts calls."""
    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path))
    monkeypatch.setattr(peak.time, "sleep", lambda s: None)
    monkeypatch.setattr(peak, "floor_flops", lambda device, dtype: 50e9)
    calls = []

    def install(*values: float):
        def probe(device, dtype):
            calls.append(dtype)
            return values[min(len(calls) - 1, len(values) - 1)]
        monkeypatch.setattr(peak, "probe", probe)
        return calls
    return install


def cached() -> dict:
    path = cache_dir() / peak.CACHE
    return json.loads(path.read_text()) if path.exists() else {}


def test_best_of_several_probes_is_cached(probes):
    calls = probes(100e9, 300e9, 200e9)
    assert peak.peak_flops(CPU, F32) == 300e9 and len(calls) == peak.PROBES
    (entry,) = cached().values()
    assert entry["flops"] == 300e9
    assert peak.peak_flops(CPU, F32) == 300e9 and len(calls) == peak.PROBES  # from the cache now


def test_a_probe_under_load_is_not_cached(probes):
    calls = probes(0.2e9)  # far below the floor: other processes had the cores
    assert peak.peak_flops(CPU, F32) == 0.2e9
    assert cached() == {}
    probes(400e9)  # the next run, on a quiet machine, probes again and keeps the real figure
    assert peak.peak_flops(CPU, F32) == 400e9 and len(calls) == 2 * peak.PROBES
    assert [e["flops"] for e in cached().values()] == [400e9]


def test_training_faster_than_the_peak_reprobes_and_mfu_stays_below_one(probes):
    probes(100e9)
    meter = peak.PeakMeter(CPU, F32)
    assert meter.mfu(50e9) == pytest.approx(0.5) and meter.reprobes == 0
    calls = probes(150e9)  # training reaches 200 GFLOP/s: the peak was low; a re-probe finds 150
    assert meter.mfu(200e9) == pytest.approx(1.0)  # never above: the peak is at least what was observed
    assert meter.reprobes == 1 and len(calls) == 2 * peak.PROBES  # (calls counts every probe so far)
    assert [e["flops"] for e in cached().values()] == [200e9]
    assert meter.mfu(100e9) == pytest.approx(0.5)
    probes(900e9)  # a re-probe that finds more raises the peak above the observed rate
    assert meter.mfu(300e9) == pytest.approx(300 / 900)


def test_ranks_share_the_flops(probes):
    probes(100e9)
    assert peak.PeakMeter(CPU, F32, ranks=2).mfu(100e9) == pytest.approx(0.5)


def test_floors_follow_the_cpu_capability(monkeypatch):
    threads = torch.get_num_threads()
    for flags, f32, bf16 in [({"avx2", "avx512f", "amx_bf16", "avx512_bf16"}, 10e9, 50e9),
                             ({"avx2", "fma"}, 1e9, peak.SLOWEST)]:
        monkeypatch.setattr(peak, "cpu_flags", lambda f=flags: f)
        assert peak.floor_flops(CPU, F32) == f32 * threads
        assert peak.floor_flops(CPU, torch.bfloat16) == bf16 * threads


def test_real_probe_beats_the_floor_on_a_quiet_core(tmp_path, monkeypatch):
    """Not a timing assertion: the floor is 10-30x under what this CPU kind measures."""
    monkeypatch.setenv("TRAINWELL_CACHE", str(tmp_path))
    assert peak.probe(CPU, F32, max_n=512, seconds=0.02) > 0


def test_a_run_never_logs_mfu_above_one(probes, tmp_path, tiny):
    """The Trainer's MFU goes through the meter: a peak probed far too low is raised, not exceeded."""
    import trainwell

    probes(1e3)  # a hopeless peak (1 kFLOP/s), as if probed while the cores were taken
    res = trainwell.train("default", tiny(train__steps=6, log__every=2, eval__every=0), run_dir=tmp_path / "run")
    rows = [json.loads(line) for line in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    mfu = [r["train/mfu"] for r in rows if "train/mfu" in r]
    assert len(mfu) == 3 and all(0 < m <= 1.0 for m in mfu)
