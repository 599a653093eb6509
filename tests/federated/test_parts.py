"""Partitions, the privacy accountant, stale-message rules, strategy options and state, LoRA payloads."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from conftest import run_inprocess


# ---------------------------------------------------------------- partitions

def test_iid_covers_every_sample_once():
    from trainwell.federated.partition import iid

    parts = iid(1000, 7, seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(1000))
    assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_dirichlet_small_alpha_skews_labels_and_large_alpha_does_not():
    from trainwell.federated.partition import dirichlet

    labels = np.repeat(np.arange(10), 150)

    def top_share(alpha):  # mean share of each silo's most common label
        parts = dirichlet(labels, 10, alpha, seed=0)
        assert sorted(np.concatenate(parts).tolist()) == list(range(len(labels)))
        return np.mean([np.bincount(labels[p], minlength=10).max() / len(p) for p in parts])

    assert top_share(0.1) > 0.5 and top_share(100.0) < 0.2  # iid: 0.1 plus noise


def test_packages_partition_reads_one_package_per_silo():
    from trainwell.config import load_config
    from trainwell.engine.trainer import seed_everything
    from trainwell.federated.partition import silo_source
    from trainwell.paradigms import build_job

    cfg = load_config("default", ["data.packages=['json', 'email']", "data.context=32", "federated.silos=2",
                                  "federated.partition=packages", "federated.packages=['json', 'email']"])
    seed_everything(0)
    job = build_job(cfg, torch.device("cpu"))
    sizes = [len(silo_source(cfg, job, i).tokens) for i in range(2)]
    assert 0 < sizes[0] < sizes[1] and sum(sizes) <= len(job.source.tokens)


@pytest.mark.parametrize("sets, words", [
    (["federated.partition=dirichlet", "data.dataset=diabetes", "objective.name=regress"], "classification"),
    (["federated.partition=folders"], "silo_data"),
    (["federated.clients_per_round=5"], "more than federated.silos"),
    (["federated.strategy_options={eta = 0.1}"], "not an option of Flower's FedAvg"),
    (["federated.strategy=fedadam", "federated.strategy_options={min_train_nodes = 1}"], "set by trainwell"),
    (["federated.strategy=krum", "federated.dp_noise=1.0"], "needs federated.strategy = 'fedavg' or 'fedprox'"),
    (["federated.secure_aggregation=true"], "legacy API"),
])
def test_bad_federated_settings_are_one_clear_sentence(sets, words, tmp_path):
    from trainwell.config import load_config
    from trainwell.errors import ConfigError
    from trainwell.federated.server import prepare

    with pytest.raises(ConfigError, match=words.replace("(", r"\(").replace(")", r"\)")):
        prepare(load_config("digits_cnn", ["federated.silos=3", *sets]), tmp_path / "r", simulation=True)
    assert not (tmp_path / "r").exists()  # refused before anything was written


def test_the_cli_says_it_and_exits_2(tmp_path, cli):
    out = cli("train", "digits_cnn", "--run-dir", str(tmp_path / "r"), "--set", "federated.silos=3",
              "--set", "federated.strategy_options={eta = 0.1}")
    assert out.returncode == 2 and "not an option of Flower's FedAvg" in out.stderr
    assert "Traceback" not in out.stderr


# ---------------------------------------------------------------- privacy

@pytest.mark.parametrize("sigma, rounds, delta", [(3.5, 30, 1e-5), (1.0, 10, 1e-5), (10.0, 100, 1e-6)])
def test_accountant_matches_the_gaussian_mechanism_in_closed_form(sigma, rounds, delta):
    """The Gaussian mechanism has RDP eps(a) = a / (2 sigma^2) per release (Mironov 2017, Prop. 7); T
    releases compose to T a / (2 sigma^2), converted to (eps, delta) by Canonne, Kamath & Steinke 2020
    (Prop. 12): eps = rdp + log((a-1)/a) - (log delta + log a) / (a - 1), minimised over a > 1."""
    from trainwell.federated.privacy import epsilon

    alphas = 1 + np.geomspace(1e-3, 1e4, 200_000)
    exact = np.min(rounds * alphas / (2 * sigma**2) + np.log((alphas - 1) / alphas)
                   - (math.log(delta) + np.log(alphas)) / (alphas - 1))
    got = epsilon(sigma, delta, rounds, population=10)
    assert exact <= got <= exact * 1.01  # the accountant evaluates a fixed grid of orders


def test_noise_is_calibrated_to_the_budget():
    from trainwell.federated.privacy import epsilon, noise_multiplier

    sigmas = [noise_multiplier(e, 1e-5, 20, population=10) for e in (1.0, 4.0, 8.0)]
    assert sigmas[0] > sigmas[1] > sigmas[2]
    for e, s in zip((1.0, 4.0, 8.0), sigmas):
        assert epsilon(s, 1e-5, 20, population=10) == pytest.approx(e, rel=1e-3)


def test_clipping_mod_bounds_each_update(tmp_path):
    """Flower's fixedclipping_mod on the silo: ||new - global|| <= dp_clip in the reply."""
    from flwr.app import ConfigRecord, Message, RecordDict
    from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

    from trainwell.federated.records import from_record, to_record, traveling

    _, plan, grid = run_inprocess(tmp_path / "run", "federated.rounds=1")
    sent = {k: v.clone() for k, v in traveling(plan.adapted).items()}
    stamp = dict(plan.stamp())
    stamp.update({"server-round": 2, KEY_CLIPPING_NORM: 0.05})
    reply = grid.deliver(Message(RecordDict({"arrays": to_record(sent), "config": ConfigRecord(stamp)}),
                                 dst_node_id=next(iter(grid.nodes)), message_type="train"))
    assert not reply.has_error(), reply.error
    new = from_record(reply.content["arrays"])
    norm = math.sqrt(sum(float(((new[k] - sent[k]) ** 2).sum()) for k in sent))
    assert norm == pytest.approx(0.05, rel=1e-3)
    assert reply.content["metrics"]["num-examples"] == 1  # DP-FedAvg: every silo counts the same


# ---------------------------------------------------------------- strategies and their state

def test_fedadam_moments_survive_a_checkpoint(tmp_path):
    from trainwell import checkpoint as ckpt
    from trainwell.federated import strategies

    _, plan, _ = run_inprocess(tmp_path / "run", "federated.rounds=2", "federated.strategy=fedadam")
    found, _ = ckpt.latest_valid(tmp_path / "run" / "checkpoints")
    fresh = strategies.build(plan.cfg, evaluate_on_clients=False)
    ckpt.load(found, {"strategy": strategies.StrategyState(fresh)}, strict=False)
    for attr in ("m_t", "v_t"):
        a, b = getattr(plan.strategy, attr), getattr(fresh, attr)
        assert set(a) == set(b) and all(np.array_equal(a[k], b[k]) for k in a)


def test_lora_sends_only_the_adapters(tmp_path, tiny):
    """Federated LoRA on text: the ArrayRecord holds the adapter matrices, a few % of the model."""
    from trainwell.api import train

    from trainwell.config import load_config
    from trainwell.federated.records import traveling

    pre = train("default", tiny(), run_dir=tmp_path / "pre")
    sets = tiny(**{"train.init_from": str(pre.run_dir / "checkpoints" / "step-20"), "adapter.method": "lora",
                   "adapter.rank": 2, "eval.samples": 0})
    lora = load_config("default", [*sets, "federated.silos=2", "federated.rounds=2", "federated.local_steps=3"])
    summary, plan, _ = run_inprocess(tmp_path / "fed", cfg=lora)
    keys = set(traveling(plan.adapted))
    assert keys and all("lora_" in k for k in keys)
    assert summary["global_model_bytes"] < 0.1 * summary["full_model_bytes"]
    assert summary["val_loss_by_round"][-1] < summary["val_loss_by_round"][0] + 1.0
