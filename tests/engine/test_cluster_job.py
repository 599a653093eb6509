"""SimCLR + k-means clustering job: the NT-Xent loss, deterministic resumable views, a tiny run."""

from __future__ import annotations

import math

import numpy as np
import torch

from trainwell.data.samples import ArrayBatches
from trainwell.data.views import Augment, PairedViews
from trainwell.objectives.contrastive import nt_xent


def test_nt_xent_matches_the_formula_on_a_hand_made_pair():
    # B = 2 in 2-D: views of sample 0 point along x, views of sample 1 along y.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[2.0, 0.0], [0.0, 3.0]])  # same directions, other lengths: normalised away
    t = 0.5
    # each anchor: partner similarity 1, the other two views similarity 0 (orthogonal)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * math.exp(0 / t)))
    assert abs(float(nt_xent(z1, z2, t)) - expected) < 1e-6


def test_nt_xent_prefers_matching_views_to_random_ones():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(16, 8, generator=g)
    same = nt_xent(z, z + 0.01 * torch.randn(16, 8, generator=g), 0.5)
    random = nt_xent(z, torch.randn(16, 8, generator=g), 0.5)
    swapped = nt_xent(z, z.roll(1, dims=0), 0.5)  # every partner is the wrong sample
    assert same < random and same < swapped


def _source(seed: int = 3) -> PairedViews:
    x = np.random.default_rng(0).normal(size=(20, 1, 8, 8)).astype(np.float32)
    return PairedViews(ArrayBatches(x, np.zeros(20, dtype=np.int64), batch_size=8, seed=seed),
                       Augment(background=float(x.min())), seed=seed)


def test_views_are_deterministic_and_resume_exactly_across_epochs():
    a, b = _source(), _source()
    for _ in range(4):  # 3 batches per epoch: crosses into epoch 1
        x, y = next(a), next(b)
        assert torch.equal(x["view1"], y["view1"]) and torch.equal(x["view2"], y["view2"])
    assert not torch.equal(x["view1"], x["view2"])  # two different augmentations of the same images
    state = a.state_dict()
    expected = [next(a) for _ in range(3)]
    resumed = _source()
    resumed.load_state_dict(state)
    for want in expected:
        got = next(resumed)
        assert torch.equal(got["view1"], want["view1"]) and torch.equal(got["view2"], want["view2"])
    assert not torch.equal(next(_source(seed=4))["view1"], next(_source())["view1"])
    assert "target" not in expected[0]  # labels never reach the objective


def test_augment_keeps_shapes_and_background():
    aug = Augment(rotate_deg=0, scale=0, shift_px=1, noise=0, pixel_drop=0, background=-1.0)
    x = torch.full((4, 1, 8, 8), -1.0)
    out = aug(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and torch.allclose(out, x)  # an empty image stays empty when shifted
    drop = Augment(rotate_deg=0, scale=0, shift_px=0, noise=0, pixel_drop=0.5, background=-1.0)
    out = drop(torch.ones(4, 1, 8, 8), torch.Generator().manual_seed(0))
    assert 0.3 < float((out == -1.0).float().mean()) < 0.7


def test_tiny_clustering_run_reports_ari_nmi_and_baseline(tmp_path):
    import trainwell

    result = trainwell.train("digits_cluster", [
        "train.epochs=0", "train.steps=3", "train.batch_size=32", "train.threads=1", "model.channels=[8]",
        "model.embed_dim=16", "model.proj_dim=8", "eval.every=0", "checkpoint.every=100",
        "log.every=1", "log.progress=\"off\"", "log.tensorboard=false"],
        run_dir=tmp_path / "r")
    s = result.summary
    for key in ("test_ari", "test_nmi", "all_ari", "all_nmi", "val_ari", "val_nmi", "baseline_kmeans_ari",
                "baseline_kmeans_nmi", "baseline_kmeans_ari_all", "baseline_kmeans_nmi_all"):
        assert -1.0 <= s[key] <= 1.0, key
    assert s["baseline_kmeans_ari_all"] > 0.5  # k-means on raw digit pixels is far from chance
    assert (tmp_path / "r" / "plots" / "embedding.png").is_file()
    assert (tmp_path / "r" / "plots" / "clusters.png").is_file()
    # log.plots = false: the same run draws none of its figures
    again = trainwell.train("digits_cluster", [
        "train.epochs=0", "train.steps=1", "train.batch_size=32", "train.threads=1", "model.channels=[8]",
        "model.embed_dim=16", "model.proj_dim=8", "eval.every=0", "checkpoint.every=100",
        "log.progress=\"off\"", "log.tensorboard=false", "log.plots=false"], run_dir=tmp_path / "off")
    assert "test_ari" in again.summary and not (tmp_path / "off" / "plots").exists()


def test_resuming_from_a_mid_run_checkpoint_reproduces_the_weights_exactly(tmp_path):
    import shutil

    from safetensors.torch import load_file

    import trainwell

    sets = ["train.epochs=0", "train.steps=8", "train.batch_size=32", "train.threads=1", "model.channels=[8]",
            "model.embed_dim=16", "model.proj_dim=8", "eval.every=0", "checkpoint.every=4", "checkpoint.keep=2",
            "log.progress=\"off\"", "log.tensorboard=false", "log.plots=false"]
    full = trainwell.train("digits_cluster", sets, run_dir=tmp_path / "full").run_dir
    cut = tmp_path / "cut"
    shutil.copytree(full, cut)
    shutil.rmtree(cut / "checkpoints" / "step-8")  # as if killed between step 4 and step 8
    trainwell.train(resume=cut)
    for name in ("model.safetensors", "optimizer.safetensors"):
        a, b = load_file(full / "checkpoints/step-8" / name), load_file(cut / "checkpoints/step-8" / name)
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
