"""digits_density: a tiny end-to-end run, the flow's exact inverse and log-det, deterministic dequantization."""

from __future__ import annotations

import numpy as np
import torch

import trainwell
from trainwell.config import load_config
from trainwell.data.dequantize import Dequantized, noise_key
from trainwell.data.samples import ArrayBatches
from trainwell.models.flow import build_realnvp

TINY = ["model.couplings=2", "model.hidden=16", "model.depth=1", "objective.gmm_components=[1, 2]",
        "objective.samples=4", "train.epochs=1", "train.batch_size=128", "eval.every=5", "checkpoint.every=5",
        "log.every=5", "log.progress='off'", "log.tensorboard=false", "log.plots=false"]


def test_tiny_run_reports_bits_per_dim_and_gmm_baseline(tmp_path):
    result = trainwell.train("digits_density", [*TINY, "log.plots=true"], run_dir=tmp_path / "r")
    s = result.summary
    for key in ("val_bits_per_dim", "test_bits_per_dim", "test_bits_per_dim_final", "test_checkpoint",
                "baseline_gmm_bits_per_dim", "baseline_gmm_components", "beats_gmm_by_bits_per_dim"):
        assert key in s, key
    assert s["baseline_gmm_components"] in (1, 2)
    assert s["levels"] == 17 and s["fit_samples"] + s["val_samples"] == 1437 and s["test_samples"] == 360
    assert s["test_checkpoint"].startswith("step-")  # checkpoints at eval steps: the best one is scored
    assert 0 < s["test_bits_per_dim"] < 10 and np.isfinite(s["baseline_gmm_bits_per_dim"])
    assert (tmp_path / "r" / "plots" / "samples.png").stat().st_size > 0


def tiny_flow(seed: int = 0):
    cfg = load_config("digits_density", ["model.couplings=4", "model.hidden=8", "model.depth=1"]).model
    torch.manual_seed(seed)
    flow = build_realnvp(cfg, feature_shape=(1, 2, 3), levels=17).double().eval()
    with torch.no_grad():  # leave the identity initialisation, so the test sees real couplings
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    flow.fit_preprocessing(torch.rand(50, 1, 2, 3, dtype=torch.float64) * 17)
    return flow


def test_flow_inverse_and_logdet_match_brute_force():
    flow = tiny_flow()
    x = torch.rand(5, 1, 2, 3, dtype=torch.float64) * 17
    z, logdet = flow(x)
    assert torch.allclose(flow.inverse(z), x, atol=1e-8)
    for i in range(len(x)):  # log|det dz/dx| from the full 6x6 Jacobian
        jac = torch.autograd.functional.jacobian(lambda v: flow(v.reshape(1, 1, 2, 3))[0][0], x[i].reshape(-1))
        assert torch.allclose(logdet[i], torch.linalg.slogdet(jac)[1], atol=1e-8)


def test_dequantization_is_a_function_of_seed_epoch_index_and_resumes():
    x = np.arange(40 * 4, dtype=np.float32).reshape(40, 4) % 17
    make = lambda: Dequantized(ArrayBatches(x, np.zeros(40, dtype=np.int64), batch_size=16, seed=3), seed=3)
    a, b = make(), make()
    run_a = [next(a)["input"] for _ in range(7)]  # crosses two epoch boundaries (3 batches per epoch)
    assert all(torch.equal(u, next(b)["input"]) for u in run_a)
    for u in run_a:
        frac = u - u.floor()
        assert torch.all((frac >= 0) & (frac < 1)) and not torch.equal(frac, torch.zeros_like(frac))
    c = make()
    for _ in range(4):
        next(c)
    state = c.state_dict()
    d = make()
    d.load_state_dict(state)
    assert torch.equal(next(d)["input"], run_a[4]) and torch.equal(next(c)["input"], run_a[4])
    # batch 0 of epoch 1 carries exactly the noise drawn from its (seed, epoch, index) key
    noise = torch.rand(run_a[3].shape, generator=torch.Generator().manual_seed(noise_key(3, 1, 0)))
    assert torch.allclose(run_a[3] - run_a[3].floor(), noise, atol=1e-5)
