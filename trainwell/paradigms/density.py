"""Density estimation on integer-valued images (e.g. scikit-learn's digits, 17 grey levels).

The run: hold out ``objective.val_fraction`` of the training split for validation, train the
model on uniformly dequantized pixels (fresh noise every batch, see
:mod:`trainwell.data.dequantize`), evaluate bits/dim on the validation part (one fixed noise
draw), and at the end score the *test* split (one fixed noise draw) with the checkpoint that had
the lowest validation loss — early stopping without ever looking at test data.

The baseline, fit in the same run on the same dequantized samples: scikit-learn's
``GaussianMixture(covariance_type="full")`` for each of ``objective.gmm_components``; the count
with the lowest validation bits/dim is scored on test. Both numbers are bits/dim of the
dequantized data in the original pixel scale: ``NLL_nats / (D ln 2)``.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwell.config.schema import Config
from trainwell.data.arrays import ArrayDataset
from trainwell.engine.job import Job
from trainwell.errors import ConfigError, DataError


def split_validation(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit, val) indices of the training split; fixed by ``data.split_seed``, not by the run seed."""
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(n * fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


def gmm_baseline(fit: np.ndarray, val: np.ndarray, test: np.ndarray, components: list[int],
                 seed: int, threads: int = 0) -> dict[str, Any]:
    """Full-covariance GMMs on dequantized (N, D) data: pick the count on validation, score test."""
    from sklearn.mixture import GaussianMixture
    from threadpoolctl import threadpool_limits

    from trainwell.objectives.density import bits_per_dim

    dims = fit.shape[1]
    val_bpd: dict[int, float] = {}
    models = {}
    # train.threads also caps BLAS: on a busy small CPU, oversubscribed BLAS threads are many times slower
    with threadpool_limits(threads or None):
        for k in components:
            if k > len(fit):
                continue
            g = GaussianMixture(k, covariance_type="full", random_state=seed).fit(fit)
            val_bpd[k] = float(bits_per_dim(-g.score(val), dims))  # score = mean log-likelihood (nats)
            models[k] = g
    if not val_bpd:
        raise ConfigError(f"objective.gmm_components = {components} are all larger than the {len(fit)} "
                          f"training samples; use smaller counts.")
    best = min(val_bpd, key=val_bpd.__getitem__)
    return {"baseline_gmm_bits_per_dim": round(float(bits_per_dim(-models[best].score(test), dims)), 4),
            "baseline_gmm_components": best,
            "baseline_gmm_val_bits_per_dim": {str(k): round(v, 4) for k, v in val_bpd.items()}}


def density_job(cfg: Config, device: torch.device, ds: ArrayDataset) -> Job:
    from trainwell.data.dequantize import Dequantized, dequantize_fixed
    from trainwell.data.samples import ArrayBatches, fixed_batches
    from trainwell.models.registry import build_model
    from trainwell.objectives.density import density_loss

    o = cfg.objective
    if not ds.is_image or ds.raw_train is None:
        raise DataError("objective 'density' models images with integer pixel values; use "
                        "data.dataset = 'digits' (or an image folder).")
    shape = ds.feature_shape
    raw_train = ds.raw_train.reshape(-1, *shape).astype(np.float64)  # unscaled, whatever data.standardize
    raw_test = ds.raw_test.reshape(-1, *shape).astype(np.float64)
    if not (np.all(raw_train == np.round(raw_train)) and raw_train.min() >= 0):
        raise DataError(f"objective 'density' needs integer pixel values >= 0, but {ds.info['source']} has "
                        f"others; uniform dequantization is only defined for integer levels.")
    levels = int(max(raw_train.max(), raw_test.max())) + 1  # digits: 0..16 -> 17 levels, x in [0, 17)
    fit_idx, val_idx = split_validation(len(raw_train), o.val_fraction, cfg.data.split_seed)
    fit = raw_train[fit_idx]
    val = dequantize_fixed(raw_train[val_idx], o.test_noise_seed + 1)
    test = dequantize_fixed(raw_test, o.test_noise_seed)

    t0 = time.perf_counter()
    flat = lambda a: a.reshape(len(a), -1)
    # the GMM fits one fixed noise draw of the fitting samples (it cannot see fresh noise per epoch)
    base = gmm_baseline(flat(dequantize_fixed(fit, o.test_noise_seed + 2)), flat(val), flat(test),
                        list(o.gmm_components), seed=cfg.train.seed, threads=cfg.train.threads)
    base["baseline_gmm_seconds"] = round(time.perf_counter() - t0, 2)

    model = build_model(cfg.model, feature_shape=shape, out_features=0, levels=levels)
    if hasattr(model, "fit_preprocessing"):
        model.fit_preprocessing(torch.from_numpy(dequantize_fixed(fit, o.test_noise_seed + 2)))
    model.to(device)
    source = Dequantized(ArrayBatches(fit.astype(np.float32), np.zeros(len(fit), dtype=np.int64),
                                      batch_size=cfg.train.batch_size, seed=cfg.train.seed),
                         seed=cfg.train.seed)
    dummy = lambda a: np.zeros(len(a), dtype=np.int64)
    evals = fixed_batches(val.astype(np.float32), dummy(val), 256)
    tests = fixed_batches(test.astype(np.float32), dummy(test), 256)
    facts = {"parameters": sum(p.numel() for p in model.parameters()), "data": ds.info,
             "levels": levels, "fit_samples": len(fit_idx), "val_samples": len(val_idx),
             "test_samples": len(test), **base}

    def finish(model: torch.nn.Module, run_dir: Any) -> dict[str, Any]:
        return finish_density(model, Path(run_dir), tests, facts, o.samples if cfg.log.plots else 0, cfg.train.seed,
                              levels)

    return Job(model=model, source=source, objective=density_loss, eval_batches=evals, units="samples",
               batches_per_epoch=source.batches_per_epoch(), facts=facts, finish=finish)


@torch.no_grad()
def test_bits_per_dim(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> float:
    from trainwell.objectives.density import density_loss

    device = next(model.parameters()).device
    was = model.training
    model.eval()
    total, n = 0.0, 0
    for b in batches:
        out = density_loss(model, {"input": b["input"].to(device)})
        total, n = total + float(out.loss) * out.units, n + out.units
    model.train(was)
    return total / n


def best_checkpoint(run_dir: Path) -> tuple[Path | None, float | None]:
    """The checkpoint with the lowest recorded validation loss (checkpoints saved at eval steps)."""
    from trainwell import checkpoint as ckpt
    from trainwell.errors import CheckpointError

    best: tuple[Path | None, float | None] = (None, None)
    for path in ckpt.list_checkpoints(run_dir / "checkpoints"):
        try:
            val = ckpt.verify(path).get("meta", {}).get("val_loss")
        except CheckpointError:
            continue
        if val is not None and math.isfinite(val) and (best[1] is None or val < best[1]):
            best = (path, float(val))
    return best


def finish_density(model: torch.nn.Module, run_dir: Path, tests: list[dict[str, torch.Tensor]],
                   facts: dict[str, Any], n_samples: int, seed: int, levels: int) -> dict[str, Any]:
    from trainwell import checkpoint as ckpt

    out: dict[str, Any] = {"test_bits_per_dim_final": round(test_bits_per_dim(model, tests), 4)}
    path, val = best_checkpoint(run_dir)
    chosen = model
    if path is not None:
        chosen = copy.deepcopy(model)
        chosen.load_state_dict(ckpt.load_entry(path, "model"))
        out["test_checkpoint"] = path.name
        out["test_checkpoint_val_bits_per_dim"] = round(val, 4)
    else:
        out["test_checkpoint"] = "final (no checkpoint recorded a validation loss)"
    bpd = test_bits_per_dim(chosen, tests)
    out["test_bits_per_dim"] = round(bpd, 4)
    out["beats_gmm_by_bits_per_dim"] = round(facts["baseline_gmm_bits_per_dim"] - bpd, 4)
    if n_samples and hasattr(chosen, "sample"):
        chosen.eval()
        g = torch.Generator().manual_seed(seed)
        x = chosen.sample(n_samples, generator=g).cpu().numpy()  # (n, C, H, W) in [0, levels)
        x = np.clip(np.floor(x), 0, levels - 1)  # back to the discrete levels the data has
        out["samples_png"] = str(samples_png(x, levels, run_dir / "plots" / "samples.png",
                                             title=f"RealNVP samples (test {bpd:.3f} bits/dim)"))
    return out


def samples_png(images: np.ndarray, levels: int, path: Path, *, title: str) -> Path:
    """A grid of (N, 1, H, W) images with values in 0..levels-1."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(images)
    cols = min(8, n)
    rows = (n + cols - 1) // cols
    fig = Figure(figsize=(1.0 * cols, 1.0 * rows + 0.5), dpi=100)
    FigureCanvasAgg(fig)
    fig.suptitle(title, fontsize=9)
    for k in range(n):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(images[k, 0], cmap="gray_r", vmin=0, vmax=levels - 1)
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
