"""Self-supervised representation learning, scored by clustering: SimCLR, then k-means.

The model learns from two augmented views of each training image (the labels are never in a
training batch); k-means on its L2-normalised embedding is then scored against the true labels
with the adjusted Rand index (ARI) and normalised mutual information (NMI). The same k-means on
raw pixels, fitted in the same run, is the baseline. Scores are given for the test split (k-means
fitted on the training split's embeddings, test images assigned to the nearest centroid: neither
the model nor k-means saw them) and, as clustering papers report, for the whole dataset (k-means
fitted on all of it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from trainwell.config.schema import Config
from trainwell.data.arrays import ArrayDataset
from trainwell.engine.job import Job
from trainwell.errors import ConfigError


def kmeans_scores(fit: np.ndarray, score: np.ndarray, labels: np.ndarray, k: int
                  ) -> tuple[dict[str, float], np.ndarray]:
    """k-means (10 restarts, seed 0) fitted on ``fit`` (N, D); the rows of ``score`` (M, D) go to their
    nearest centroid, and those clusters are compared with ``labels`` (M,) by ARI and NMI."""
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    pred = KMeans(k, n_init=10, random_state=0).fit(fit).predict(score)
    return {"ari": float(adjusted_rand_score(labels, pred)),
            "nmi": float(normalized_mutual_info_score(labels, pred))}, pred


@torch.no_grad()
def embed(model: torch.nn.Module, x: np.ndarray, where: str, batch_size: int = 512) -> np.ndarray:
    """(N, C, H, W) images -> (N, D) L2-normalised embeddings (projection z or encoder output h)."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    fn = model if where == "projection" else model.embed
    out = [F.normalize(fn(torch.from_numpy(x[i:i + batch_size]).to(device)).float(), dim=1).cpu()
           for i in range(0, len(x), batch_size)]
    model.train(was)
    return torch.cat(out).numpy()


def simclr_job(cfg: Config, device: torch.device, ds: ArrayDataset) -> Job:
    from trainwell.data.samples import ArrayBatches
    from trainwell.data.views import Augment, PairedViews, fixed_views
    from trainwell.models.registry import build_model
    from trainwell.objectives.contrastive import simclr_loss

    o = cfg.objective
    if not ds.is_image or len(ds.feature_shape) != 3:
        raise ConfigError(f"objective.name = 'simclr' augments images, but {ds.info.get('source')} holds "
                          f"samples of shape {ds.feature_shape}; use image data (e.g. data.dataset = 'digits').")
    if ds.task != "classify":
        raise ConfigError("objective.name = 'simclr' is scored against class labels; the data has none.")
    k = o.clusters or len(ds.classes)
    model = build_model(cfg.model, feature_shape=ds.feature_shape, out_features=0).to(device)
    # the darkest pixel (0 before standardisation) is the background that shifts and dropout reveal
    augment = Augment(rotate_deg=o.rotate_deg, scale=o.scale, shift_px=o.shift_px, noise=o.noise,
                      pixel_drop=o.pixel_drop, background=float(ds.x_train.min()))
    no_labels = np.zeros(len(ds.x_train), dtype=np.int64)  # the labels never enter a training batch
    source = PairedViews(ArrayBatches(ds.x_train, no_labels, batch_size=cfg.train.batch_size,
                                      seed=cfg.train.seed), augment, seed=cfg.train.seed)
    evals = fixed_views(torch.from_numpy(ds.x_test), augment, batch_size=256, seed=o.eval_seed)

    # the baseline: the same k-means on raw pixels, in this run
    x_all = np.concatenate([ds.x_train, ds.x_test])
    y_all = np.concatenate([ds.y_train, ds.y_test])
    n_train = len(ds.x_train)
    raw_all = np.concatenate([ds.raw_train, ds.raw_test])
    base_test, _ = kmeans_scores(ds.raw_train, ds.raw_test, ds.y_test, k)
    base_all, _ = kmeans_scores(raw_all, raw_all, y_all, k)
    facts: dict[str, Any] = {
        "parameters": sum(p.numel() for p in model.parameters()), "data": ds.info, "clusters": k,
        "cluster_split": "test (k-means fitted on the train split); *_all: the whole dataset",
        "baseline_kmeans_ari": round(base_test["ari"], 4), "baseline_kmeans_nmi": round(base_test["nmi"], 4),
        "baseline_kmeans_ari_all": round(base_all["ari"], 4), "baseline_kmeans_nmi_all": round(base_all["nmi"], 4)}

    def extras(_: dict[str, float]) -> dict[str, float]:
        z = embed(model, x_all, o.cluster_on)
        scores, _ = kmeans_scores(z[:n_train], z[n_train:], ds.y_test, k)
        return {"val/ari": scores["ari"], "val/nmi": scores["nmi"]}

    def finish(model: torch.nn.Module, run_dir: Path) -> dict[str, Any]:
        z = embed(model, x_all, o.cluster_on)
        z_test = z[n_train:]
        test, pred_test = kmeans_scores(z[:n_train], z_test, ds.y_test, k)
        whole, pred_all = kmeans_scores(z, z, y_all, k)
        if cfg.log.plots:
            plots = Path(run_dir) / "plots"
            embedding_png(z_test, pred_test, ds.y_test, test["ari"], plots / "embedding.png")
            clusters_png(x_all, pred_all, plots / "clusters.png")
        return {"test_ari": round(test["ari"], 4), "test_nmi": round(test["nmi"], 4),
                "all_ari": round(whole["ari"], 4), "all_nmi": round(whole["nmi"], 4)}

    return Job(model=model, source=source, objective=lambda m, b: simclr_loss(m, b, temperature=o.temperature),
               eval_batches=evals, units="samples", batches_per_epoch=source.batches_per_epoch(), facts=facts,
               eval_extras=extras, finish=finish)


# --------------------------------------------------------------------------- figures


def embedding_png(z: np.ndarray, clusters: np.ndarray, labels: np.ndarray, ari: float, path: Path) -> Path:
    """2-D PCA of the test embedding, coloured by k-means cluster (left) and by true label (right).

    For display only, each cluster takes the colour of the class it overlaps most (one-to-one,
    Hungarian matching), so agreeing panels look alike; the scores never use this matching.
    """
    from scipy.optimize import linear_sum_assignment
    from sklearn.decomposition import PCA

    from trainwell.track.figures import _figure

    k = int(max(clusters.max(), labels.max())) + 1
    overlap = np.zeros((k, k), dtype=np.int64)
    np.add.at(overlap, (clusters, labels), 1)
    rows, cols = linear_sum_assignment(-overlap)
    shown = dict(zip(rows, cols))
    as_class = np.array([shown[c] for c in clusters])
    xy = PCA(2, random_state=0).fit_transform(z)  # (N, 2); t-SNE looks better but costs ~30 s here
    fig = _figure(10, 4.8)
    for i, (colour, title) in enumerate([(as_class, f"k-means clusters (test ARI {ari:.3f})"),
                                         (labels, "true labels (not used in training)")]):
        ax = fig.add_subplot(1, 2, i + 1)
        ax.scatter(xy[:, 0], xy[:, 1], c=colour, cmap="tab10", s=8, vmin=0, vmax=9)
        for c in np.unique(colour):
            cx, cy = np.median(xy[colour == c], axis=0)
            ax.text(cx, cy, str(c), fontsize=11, weight="bold", ha="center", va="center")
        ax.set_title(title)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("test-split embedding, 2-D PCA (cluster colours matched to classes for display)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def clusters_png(images: np.ndarray, clusters: np.ndarray, path: Path, per_cluster: int = 12) -> Path:
    """One row per cluster: the first few images k-means put in it. images: (N, C, H, W)."""
    from trainwell.track.figures import _figure

    ids = np.unique(clusters)
    fig = _figure(0.8 * per_cluster, 0.85 * len(ids) + 0.4)
    fig.suptitle("examples of each cluster (whole dataset)")
    for r, c in enumerate(ids):
        members = np.flatnonzero(clusters == c)
        for j, n in enumerate(members[:per_cluster]):
            ax = fig.add_subplot(len(ids), per_cluster, r * per_cluster + j + 1)
            img = images[n][0] if images[n].shape[0] == 1 else images[n].transpose(1, 2, 0)
            ax.imshow(img, cmap="gray_r" if img.ndim == 2 else None)
            ax.axis("off")
            if j == 0:
                ax.set_title(f"cluster {c} ({len(members)})", fontsize=7, loc="left")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
