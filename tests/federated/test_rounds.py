"""The round logic with every silo called in-process (no Flower runtime): exact resume after the server
dies mid-round, silos rebuilt from their own disk, stale messages ignored, silos that fail or time out."""

from __future__ import annotations

import pytest
import torch

from conftest import assert_same, final_weights, run_inprocess


def crash_in_round(R: int, after: int):
    """A fault that kills the server in round R once ``after`` train messages of that round went out."""
    sent = []

    def fault(node, msg):
        if msg.metadata.message_type == "train" and int(msg.content["config"]["server-round"]) == R:
            sent.append(node)
            if len(sent) > after:
                return "crash"
        return None

    return fault


def forget_silos(node, msg):
    """Every message handled as by a fresh process (the deployment runtime): silos rebuild from disk."""
    from trainwell.federated import silo

    silo._BUILT.clear()
    return None


@pytest.mark.parametrize("sets, fault", [
    (("federated.strategy=fedadam", "federated.strategy_options={eta = 0.01}", "federated.clients_per_round=2"), None),
    (("federated.strategy=fedavg", "federated.dp_epsilon=8.0", "federated.dp_clip=2.0"), "forget"),
], ids=["fedadam-sampled-in-memory", "fedavg-dp-rebuilt-from-disk"])
def test_server_killed_mid_round_resumes_exactly(tmp_path, sets, fault):
    """The undisturbed run keeps its silos in memory. The killed one dies in round 2 after one silo has
    trained it; its restarted server repeats round 2 and that silo rewinds to its round-1 checkpoint. With
    'forget' every message of the killed run is handled by a freshly built silo (as the deployment
    runtime does), which restores its Trainer from its own disk."""
    from inprocess import Crash

    sets = (*sets, "federated.rounds=2")
    for run in ("whole", "killed"):  # the same secret DP-noise key (each run draws its own otherwise)
        share_noise_key(tmp_path / run)
    whole, _, _ = run_inprocess(tmp_path / "whole", *sets)
    crash = crash_in_round(2, after=1)
    with pytest.raises(Crash):
        run_inprocess(tmp_path / "killed", *sets, fault=lambda n, m: (forget_silos(n, m) if fault else None) or crash(n, m))
    resumed, plan, grid = run_inprocess(tmp_path / "killed", *sets, fault=forget_silos if fault else None)
    assert plan.identity["incarnation"] == 2 and resumed["server_starts"] == 2
    assert {r for _, kind, r in grid.delivered if kind == "train"} == {2}
    assert_same(final_weights(tmp_path / "whole"), final_weights(tmp_path / "killed"))
    assert resumed["val_loss_by_round"] == whole["val_loss_by_round"]
    assert (tmp_path / "killed" / "meta-resume-1.json").is_file()
    if "epsilon" in whole:  # the accountant's ledger came back with the checkpoint
        assert 0 < plan.history.rounds[1]["epsilon"] < resumed["epsilon"] <= 8.0 + 1e-6
        assert resumed["epsilon"] == pytest.approx(whole["epsilon"])


def share_noise_key(run_dir):
    from trainwell.federated import protocol

    run_dir.mkdir(parents=True)
    protocol.write_json(run_dir / "server.json", {"token": run_dir.name, "started": 1.0, "incarnation": 0,
                                                   "noise_key": "00" * 32})


def test_stale_messages_are_ignored(tmp_path):
    from flwr.app import ConfigRecord, Message, RecordDict

    from trainwell.federated import protocol
    from trainwell.federated.records import to_record, traveling

    with pytest.raises(Exception):
        run_inprocess(tmp_path / "run", fault=crash_in_round(2, after=0))
    _, plan, grid = run_inprocess(tmp_path / "run")  # incarnation 2 finishes the run

    def message(incarnation, rnd):
        stamp = dict(plan.stamp())
        stamp[protocol.INCARNATION], stamp[protocol.ROUND] = incarnation, rnd
        content = RecordDict({"arrays": to_record(traveling(plan.adapted)), "config": ConfigRecord(stamp)})
        return Message(content, dst_node_id=next(iter(grid.nodes)), message_type="train")

    dead = grid.deliver(message(1, 3))  # queued by the server that died
    assert dead.has_error() and "server start 1" in dead.error.reason and "ignored" in dead.error.reason
    old = grid.deliver(message(2, 1))  # a round the live server has moved past
    assert old.has_error() and "round 1" in old.error.reason
    again = grid.deliver(message(3, 3))  # a newer server start may repeat a round: accepted
    assert not again.has_error()


def test_silos_that_fail_or_time_out_leave_the_round_and_are_named(tmp_path):
    def fault(node, msg):
        r = int(msg.content["config"]["server-round"])
        if msg.metadata.message_type != "train":
            return None
        return {(2, 101): "timeout", (2, 102): "error", (3, 101): "error"}.get((r, node))

    summary, plan, _ = run_inprocess(tmp_path / "run", fault=fault)
    assert summary["rounds"] == 3
    assert summary["missing_silos"] == {"2": ["silo-1", "silo-0"], "3": ["silo-0"]}
    h = plan.history.rounds
    assert h[2]["trained"] == ["silo-2"] and h[2]["timed_out"] == ["silo-0"] and list(h[2]["failed"]) == ["silo-1"]
    assert h[3]["trained"] == ["silo-1", "silo-2"]


def test_a_round_nobody_answers_stops_the_run_with_a_clear_error(tmp_path):
    from trainwell.federated.server import FederatedError

    with pytest.raises(FederatedError, match="round 2: none of the 3 silos asked answered"):
        run_inprocess(tmp_path / "run", fault=lambda node, msg: "timeout" if int(
            msg.content["config"]["server-round"]) == 2 else None)


def test_it_learns_and_reports_what_travelled(tmp_path):
    summary, plan, _ = run_inprocess(tmp_path / "run", "federated.rounds=4", "federated.local_steps=10")
    acc = summary["val_accuracy_by_round"]
    assert acc[-1] > 0.6 and acc[-1] > acc[0]
    assert summary["global_model_bytes"] == summary["full_model_bytes"] == 4 * summary["parameters"]
    assert summary["bytes_to_silos_per_round"] == 3 * summary["global_model_bytes"]  # 3 silos, no silo eval
    assert summary["bytes_from_silos_per_round"] == 3 * summary["global_model_bytes"]


def test_fedprox_pulls_towards_the_global_model(tmp_path):
    """The proximal term (mu/2)||w - w_global||^2 keeps the silos' models nearer the global one, so the
    aggregate moves less from the initial global model than FedAvg's."""
    from trainwell.federated.records import traveling

    moved = {}
    for name, sets in (("fedavg", ()), ("fedprox", ("federated.strategy_options={proximal_mu = 1.0}",))):
        _, plan, _ = run_inprocess(tmp_path / name, "federated.rounds=1", "federated.local_steps=15",
                                   f"federated.strategy={name}", *sets)
        start = initial_weights(plan)
        end = final_weights(plan.run_dir)
        moved[name] = sum(float((end[k] - start[k]).norm()) for k in traveling(plan.adapted))
    assert moved["fedprox"] < 0.8 * moved["fedavg"]


def initial_weights(plan):
    """The global model before round 1: the server's model rebuilt from the same seed."""
    from trainwell.engine.trainer import seed_everything
    from trainwell.paradigms import build_job

    seed_everything(plan.cfg.train.seed)
    return build_job(plan.cfg, torch.device("cpu")).model.state_dict()
