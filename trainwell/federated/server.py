"""The server side: Flower's Strategy.start drives the rounds; trainwell makes them resumable.

Flower 1.42 cannot resume a run: ``Strategy.start`` always counts rounds from 1 and keeps the
strategy's state (FedAdam's moments, FedAvgM's momentum, the privacy ledger) only in memory. So:

- after every round, ``evaluate_fn`` (which ``Strategy.start`` calls once a round is complete) scores
  the global model on the server's held-out split and writes a trainwell checkpoint
  ``checkpoints/step-<round>``: the global model (``model.safetensors``, so `trainwell eval RUN`
  works), the strategy's state (strategies.StrategyState) and the round history (JSON);
- a restarted server loads the newest one and calls ``Strategy.start`` for the remaining rounds
  through ``Rounds``, a wrapper that adds the offset to every round number the strategy sees, so
  FedAdam's bias correction, FedProx's config and the checkpoints count from where the run stopped;
- what makes a round repeat exactly: node sampling and the DP noise are seeded per round (the
  noise from a secret key kept in the server's run dir), the nodes are sampled from a sorted list,
  and the replies are aggregated in the order of the silos' names, not in order of arrival
  (floating-point sums depend on the order);
- messages are stamped (protocol.py) so silos ignore what a dead server had queued.

A silo that fails or does not answer within federated.round_timeout_s is left out of the round
(Flower's send_and_receive returns what arrived); the history and the summary name it.
"""

from __future__ import annotations

import hashlib
import json
import random
import secrets
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwell import checkpoint as ckpt
from trainwell.config import Config, config_hash, to_toml, trajectory_items
from trainwell.errors import TrainwellError
from trainwell.federated import partition, protocol, strategies
from trainwell.federated.records import load_into, nbytes, to_record, traveling

from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord  # noqa: E402
from flwr.serverapp import Grid  # noqa: E402
from flwr.serverapp.strategy import Strategy  # noqa: E402


class FederatedError(TrainwellError):
    pass


class History:
    """Stateful: rounds completed and what happened in each (JSON in every server checkpoint)."""

    def __init__(self) -> None:
        self.round = 0
        self.rounds: dict[int, dict[str, Any]] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"round": self.round, "rounds": {str(k): v for k, v in self.rounds.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.round = int(state["round"])
        self.rounds = {int(k): v for k, v in state["rounds"].items()}

    def at(self, r: int) -> dict[str, Any]:
        return self.rounds.setdefault(r, {})


@dataclass
class Plan:
    """Everything the server needs, built and checked before a runtime starts."""

    cfg: Config
    run_dir: Path
    job: Any
    adapted: Any  # the server's model: it holds the global weights (trainwell.adapters.Adapted)
    device: torch.device
    precision: Any
    strategy: Any
    history: History
    identity: dict[str, Any]  # server.json: token, started, incarnation, noise key
    silos_dir: str  # simulation: where silo states go ("" in deployment: each silo has its own disk)
    evaluate_on_clients: bool
    notes: list[str] = field(default_factory=list)
    sinks: list[Any] = field(default_factory=list)
    t_start: float = field(default_factory=time.perf_counter)

    @property
    def app_state(self) -> dict[str, Any]:
        return {"model": self.adapted, "strategy": strategies.StrategyState(self.strategy), "rounds": self.history}

    def stamp(self) -> ConfigRecord:
        ident = self.identity
        return ConfigRecord({protocol.RUN: ident["token"], protocol.STARTED: float(ident["started"]),
                             protocol.INCARNATION: int(ident["incarnation"]), protocol.RECIPE: to_toml(self.cfg),
                             protocol.SILOS_DIR: self.silos_dir})


def with_classes(cfg: Config) -> Config:
    """Fix the class list for silos that read their own image folders or tables: the label ids must mean
    the same everywhere, also in a silo that lacks some classes."""
    if cfg.data.name in ("image_folder", "table") and cfg.objective.name == "classify" and not cfg.data.classes:
        from trainwell.data.arrays import load_arrays

        cfg.data.classes = load_arrays(cfg.data).classes
    return cfg


def prepare(cfg: Config, run_dir: Path, *, simulation: bool) -> Plan:
    """Build the server's model and strategy, restore the newest server checkpoint of ``run_dir`` if any,
    and count this server start (the messages' incarnation)."""
    from trainwell.engine.precision import Precision, choose_precision, recorded_precision
    from trainwell.engine.prepare import prepare_model
    from trainwell.engine.restore import check_same_config
    from trainwell.engine.trainer import pick_device, seed_everything
    from trainwell.paradigms import build_job
    from trainwell.track.meta import run_meta, write_json
    from trainwell.track.metrics import MetricsJSONL

    partition.check(cfg)
    cfg = with_classes(cfg)
    f = cfg.federated
    evaluate_on_clients = f.silo_eval and (f.partition == "folders" or not simulation)
    strategy = strategies.build(cfg, evaluate_on_clients=evaluate_on_clients)
    device = pick_device(cfg.train.device)
    seed_everything(cfg.train.seed)
    job = build_job(cfg, device)
    # "auto" resolved as the Trainer does: kept from this run's start when the server restarts
    precision_name, precision_reason = choose_precision(cfg, job.model, device, previous=recorded_precision(run_dir))
    precision = Precision(precision_name, device)
    adapted, notes = prepare_model(cfg, job.model, precision.dtype)
    job.model.eval()
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
    identity = start_count(run_dir)
    history = History()
    plan = Plan(cfg, run_dir, job, adapted, device, precision, strategy, history, identity,
                str((run_dir / "silos").resolve()) if simulation else "", evaluate_on_clients, notes)
    found, _ = ckpt.latest_valid(run_dir / "checkpoints")
    if found is not None:
        manifest = ckpt.read_manifest(found)
        check_same_config(found, manifest, cfg)
        ckpt.load(found, plan.app_state, verified=True)
        notes.append(f"resumed after round {history.round} from {found}")
    name = "meta.json" if found is None else f"meta-resume-{history.round}.json"
    write_json(run_dir / name, run_meta(seed=cfg.train.seed, extra={
        "federated": True, "config_hash": config_hash(cfg), "facts": job.facts,
        "incarnation": identity["incarnation"], "runtime": "simulation" if simulation else "deployment",
        "precision": precision.name, "precision_reason": precision_reason}))
    plan.sinks.append(MetricsJSONL(run_dir / "metrics.jsonl", resume_step=history.round if found else None))
    return plan


def start_count(run_dir: Path) -> dict[str, Any]:
    """server.json: the run's token and first start time, and how often the server has started."""
    path = run_dir / "server.json"
    try:
        ident = json.loads(path.read_text(encoding="utf-8"))
        ident["incarnation"] = int(ident["incarnation"]) + 1
    except (OSError, ValueError, KeyError):
        ident = {"token": uuid.uuid4().hex, "started": time.time(), "incarnation": 1,
                 "noise_key": secrets.token_hex(32)}
    protocol.write_json(path, ident)
    return ident


# ---------------------------------------------------------------------------- the rounds


class SortedGrid:
    """The runtime's Grid with node ids in a fixed order, so a seeded sample picks the same nodes."""

    def __init__(self, grid: Grid):
        self._grid = grid

    def get_node_ids(self) -> list[int]:
        return sorted(self._grid.get_node_ids())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._grid, name)


def seeded(key: str) -> int:
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:4], "little")


class Rounds(Strategy):
    """Flower's strategy (``plan.strategy``) with round numbers that continue a restored run, a fixed
    aggregation order, and a record of who was asked, who answered and what travelled."""

    def __init__(self, plan: Plan):
        self.plan, self.inner = plan, plan.strategy
        self.offset = plan.history.round
        self.sent: dict[int, list[int]] = {}
        self.dtypes = {k: v.numpy().dtype for k, v in to_record(traveling(plan.adapted)).items()}
        self.names: dict[int, str] = {}  # node id -> silo name, learnt from replies

    def _round(self, r: int) -> int:
        return r + self.offset

    def _relax(self, R: int) -> None:
        """The first round a server runs waits for every silo; later ones go on with whoever is online
        (with DP, Flower's accountant needs the full sample every round, so it keeps waiting)."""
        if R > self.offset + 1 and not strategies.uses_dp(self.plan.cfg):
            agg = strategies.inner(self.inner)
            agg.min_available_nodes, agg.min_train_nodes = 1, 1
            agg.min_evaluate_nodes = min(agg.min_evaluate_nodes, 1)

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                        grid: Grid) -> list[Message]:
        R = self._round(server_round)
        self._relax(R)
        random.seed(seeded(f"{self.plan.cfg.train.seed}-sample-{R}"))  # Flower samples with `random`
        messages = list(self.inner.configure_train(R, arrays, config, SortedGrid(grid)))
        self.sent[R] = [m.metadata.dst_node_id for m in messages]
        h = self.plan.history.at(R)
        h["bytes_to_silos"] = len(messages) * nbytes(arrays)
        h["global_bytes"] = nbytes(arrays)
        return messages

    def aggregate_train(self, server_round: int, replies: Any) -> tuple[ArrayRecord | None, MetricRecord | None]:
        R = self._round(server_round)
        replies = list(replies)
        ok = [m for m in replies if not m.has_error()]
        for m in ok:
            self.names[m.metadata.src_node_id] = str(m.content["silo"]["name"])
        h = self.plan.history.at(R)
        answered = {m.metadata.src_node_id for m in replies}
        h["asked"] = [self.name(n) for n in self.sent.get(R, [])]
        h["trained"] = sorted(self.names[m.metadata.src_node_id] for m in ok)
        h["failed"] = {self.name(m.metadata.src_node_id): m.error.reason for m in replies if m.has_error()}
        h["timed_out"] = [self.name(n) for n in self.sent.get(R, []) if n not in answered]
        h["bytes_from_silos"] = sum(nbytes(m.content["arrays"]) for m in ok)
        if not ok:
            raise FederatedError(
                f"round {R}: none of the {len(self.sent.get(R, []))} silos asked answered (failed: "
                f"{h['failed'] or 'none'}; no answer within federated.round_timeout_s: {h['timed_out'] or 'none'}); "
                f"the run stopped after round {R - 1}'s checkpoint. Fix the silos, then resume it.")
        ordered = sorted(ok, key=lambda m: self.names[m.metadata.src_node_id])
        ordered += [m for m in replies if m.has_error()]  # the DP wrapper must see failures (it then skips)
        np.random.seed(seeded(f"{self.plan.identity['noise_key']}-{R}"))  # Flower's DP noise uses np.random
        arrays, metrics = self.inner.aggregate_train(R, ordered)
        if arrays is not None:
            arrays = same_dtypes(arrays, self.dtypes)
        h["aggregated"] = arrays is not None
        if metrics is not None:
            h["train_loss"] = float(metrics.get("train/loss", float("nan")))
        return arrays, metrics

    def configure_evaluate(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord,
                           grid: Grid) -> list[Message]:
        R = self._round(server_round)
        messages = list(self.inner.configure_evaluate(R, arrays, config, SortedGrid(grid)))
        h = self.plan.history.at(R)
        h["bytes_to_silos"] = h.get("bytes_to_silos", 0) + len(messages) * nbytes(arrays)
        return messages

    def aggregate_evaluate(self, server_round: int, replies: Any) -> MetricRecord | None:
        R = self._round(server_round)
        replies = list(replies)
        ok = sorted((m for m in replies if not m.has_error()), key=lambda m: str(m.content["silo"]["name"]))
        metrics = self.inner.aggregate_evaluate(R, ok)
        if metrics is not None:
            self.plan.history.at(R)["silos_eval"] = {k: float(v) for k, v in metrics.items()}
        return metrics

    def summary(self) -> None:
        self.inner.summary()

    def name(self, node: int) -> str:
        return self.names.get(node, f"node {node}")


def same_dtypes(arrays: ArrayRecord, dtypes: dict[str, Any]) -> ArrayRecord:
    """The model's own dtypes again: Flower's FedOpt family returns float64 (a float64 step size times
    float32 moments), which would double the bytes sent and make the global model differ from the one
    checkpointed (float32), so a resumed run would not repeat the same rounds."""
    from flwr.app import Array

    if all(a.numpy().dtype == dtypes[k] for k, a in arrays.items()):
        return arrays
    return ArrayRecord({k: Array(np.asarray(a.numpy(), dtype=dtypes[k])) for k, a in arrays.items()})


def serve(grid: Grid, plan: Plan) -> None:
    """Run the remaining rounds of ``plan`` on ``grid`` (any Flower runtime)."""
    import logging

    flower_log = logging.getLogger("flwr")
    flower_log.setLevel(max(flower_log.level, logging.WARNING))  # trainwell prints one line per round instead
    f = plan.cfg.federated
    for note in plan.notes:
        print(note, flush=True)
    rounds = Rounds(plan)
    left = f.rounds - plan.history.round
    if left <= 0:
        return
    initial = to_record(traveling(plan.adapted))
    stamp = plan.stamp()

    def end_of_round(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round == 0 and rounds.offset:  # a resumed run: round `offset` was scored before the restart
            return None
        R = rounds._round(server_round)
        return round_done(plan, R, arrays)

    rounds.start(grid, initial, num_rounds=left, timeout=f.round_timeout_s, train_config=stamp,
                 evaluate_config=ConfigRecord(dict(stamp)), evaluate_fn=end_of_round)


def round_done(plan: Plan, R: int, arrays: ArrayRecord) -> MetricRecord:
    """Score the global model after round R on the server's held-out split, log, checkpoint."""
    from trainwell.engine.job import evaluate

    load_into(plan.adapted, arrays)
    metrics = evaluate(plan.job, plan.device, plan.precision.autocast)
    h = plan.history.at(R)
    h.update({"round": R, **{k: float(v) for k, v in metrics.items()}})
    eps = privacy_spent(plan.strategy)
    if eps is not None:
        h["epsilon"] = eps
    values = {k: v for k, v in h.items() if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "round"}
    values.update({f"silos/{k}": v for k, v in h.get("silos_eval", {}).items()})
    values["fed/silos_trained"] = len(h.get("trained", []))
    for sink in plan.sinks:
        sink.log(R, values)
    if R > 0:
        plan.history.round = R
        save(plan, R, metrics)
    print(describe(plan, R, h), flush=True)
    return MetricRecord({k: float(v) for k, v in metrics.items()})


def privacy_spent(strategy: Any) -> float | None:
    for obj in strategies.chain(strategy):
        if getattr(obj, "accountant", None) is not None:
            return float(obj.accountant.get_privacy_spent().epsilon) if obj.accountant.num_releases else 0.0
    return None


def save(plan: Plan, R: int, metrics: dict[str, float]) -> None:
    c = plan.cfg.checkpoint
    meta = {"config_hash": config_hash(plan.cfg), "config": trajectory_items(plan.cfg), "round": R,
            "val_loss": metrics.get("val/loss"), "score": metrics.get("val/loss")}
    ckpt.save(plan.run_dir / "checkpoints" / f"step-{R}", plan.app_state, step=R, meta=meta)
    ckpt.prune(plan.run_dir / "checkpoints", keep_last=c.keep, keep_best=c.keep_best, best_key="score")


def describe(plan: Plan, R: int, h: dict[str, Any]) -> str:
    f = plan.cfg.federated
    scores = ", ".join(f"{k} {v:.4f}" for k, v in h.items() if k.startswith("val/"))
    if R == 0:
        return f"round 0/{f.rounds}: {scores} (the initial global model)"
    line = f"round {R}/{f.rounds}: {scores} | {len(h.get('trained', []))}/{len(h.get('asked', []))} silos trained"
    missing = [*h.get("failed", {}), *h.get("timed_out", [])]
    if missing:
        line += f" (missing: {', '.join(missing)})"
    if "epsilon" in h:
        line += f" | epsilon {h['epsilon']:.3f} at delta {f.dp_delta:g}"
    return line + f" | {h.get('bytes_to_silos', 0) / 1e6:.3f} MB out, {h.get('bytes_from_silos', 0) / 1e6:.3f} MB in"


def finish(plan: Plan) -> dict[str, Any]:
    """summary.json, plots and the paradigm's report (confusion matrix, samples) for the final global model."""
    from trainwell.engine.summary import peak_rss_mb
    from trainwell.track.meta import write_json

    cfg, f, h = plan.cfg, plan.cfg.federated, plan.history
    for sink in plan.sinks:
        sink.close()
    plan.sinks = []
    done = [h.rounds[r] for r in sorted(h.rounds) if r > 0]
    last = h.rounds.get(h.round, {})
    missing = {str(r["round"]): [*r.get("failed", {}), *r.get("timed_out", [])] for r in done
               if r.get("failed") or r.get("timed_out")}
    full_bytes = sum(v.numel() * v.element_size() for v in plan.job.model.state_dict().values())
    summary: dict[str, Any] = {
        "rounds": h.round, "strategy": f.strategy, "silos": f.silos, "partition": f.partition,
        **{k.replace("/", "_"): round(v, 4) for k, v in last.items() if k.startswith("val/")},
        "best_val_loss": min((r["val/loss"] for r in done if "val/loss" in r), default=None),
        "val_accuracy_by_round": [round(r["val/accuracy"], 4) for r in done if "val/accuracy" in r] or None,
        "val_loss_by_round": [round(r["val/loss"], 4) for r in done if "val/loss" in r],
        "bytes_to_silos_per_round": round(float(np.mean([r.get("bytes_to_silos", 0) for r in done])), 1) if done else 0,
        "bytes_from_silos_per_round": round(float(np.mean([r.get("bytes_from_silos", 0) for r in done])), 1) if done else 0,
        "global_model_bytes": int(done[-1].get("global_bytes", 0)) if done else 0,
        "full_model_bytes": int(full_bytes),
        "missing_silos": missing,
        "server_starts": plan.identity["incarnation"],
        "wall_seconds": round(time.perf_counter() - plan.t_start, 2), "peak_rss_mb": peak_rss_mb(),
        **plan.job.facts}
    if "epsilon" in last:
        summary.update(epsilon=round(last["epsilon"], 4), dp_delta=f.dp_delta, dp_clip=f.dp_clip,
                       noise_multiplier=strategies.chain(plan.strategy)[0].noise_multiplier)
    model = plan.job.model
    if plan.job.finish is not None:
        summary.update(plan.job.finish(model, plan.run_dir))
    if plan.job.sample is not None and cfg.eval.samples:
        samples = plan.job.sample(model, cfg.eval.prompt, cfg.eval.samples, cfg.eval.sample_tokens,
                                  cfg.eval.temperature, cfg.eval.top_k, cfg.train.seed)
        (plan.run_dir / "samples.txt").write_text(
            "".join(f"--- sample {i + 1} ---\n{s}\n" for i, s in enumerate(samples)), encoding="utf-8")
        summary["samples"] = samples
    write_json(plan.run_dir / "summary.json", summary)
    if cfg.log.plots:
        from trainwell.track.plots import draw_plots

        draw_plots(plan.run_dir)
    if missing:
        print(f"silos missing from rounds: {missing}", file=sys.stderr)
    return summary
