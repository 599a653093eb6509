"""The silo side as a Flower ClientApp (Message API): train and evaluate handlers around silo.py.

``app`` is what Flower runs: the simulation runtime calls it inside its Ray actors, a SuperNode
(`trainwell federate client`) in a fresh process per message. Every message carries the server's
resolved recipe, so a silo needs only its data and a folder for its state.

Differential privacy: when the server's DP wrapper puts a clipping norm into the round's config,
the reply goes through Flower's ``fixedclipping_mod``, which clips the update (new - global) to that
L2 norm before it leaves the silo; every silo then counts equally (weight 1), as DP-FedAvg averages.
"""

from __future__ import annotations

import sys
from dataclasses import replace
from typing import Any

import torch

from trainwell.federated import protocol
from trainwell.federated.records import load_into, to_record, traveling
from trainwell.federated.silo import Local, Silo, built, finish_round, local_at, locked, resolve, samples_of
from trainwell.errors import TrainwellError

from flwr.app import ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.clientapp.mod import fixedclipping_mod  # noqa: E402
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM  # noqa: E402

app = ClientApp()


class Ignored(TrainwellError):
    """A stale message (protocol.stale): answered with an error that nobody is waiting for."""


@app.train()
def train(msg: Message, context: Context) -> Message:
    if KEY_CLIPPING_NORM in msg.content["config"]:
        return fixedclipping_mod(msg, context, train_round)
    return train_round(msg, context)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    cfg, silo, stamp = accept(msg, context)
    with locked(silo.root):
        local = built(cfg, silo, stamp)  # any state will do: only the weights sent here are scored
        load_into(local.trainer.adapted, msg.content["arrays"])
        trainer = local.trainer
        metrics = trainer.strategy.evaluate(trainer.job, trainer.device, trainer.precision.autocast)
        n = sum(int(b["target"].shape[0]) for b in trainer.job.eval_batches)
    return Message(RecordDict({"metrics": MetricRecord({**metrics, "num-examples": n}),
                               "silo": ConfigRecord({"name": silo.name})}), reply_to=msg)


def train_round(msg: Message, context: Context) -> Message:
    """Global weights in, ``local_steps`` of the silo's own training, its new weights out."""
    cfg, silo, stamp = accept(msg, context)
    config = msg.content["config"]
    with locked(silo.root):
        local = local_at(cfg, silo, stamp)
        trainer = local.trainer
        resume_rng(local)
        load_into(trainer.adapted, msg.content["arrays"])
        sent = {k: v.clone() for k, v in traveling(trainer.adapted).items()}  # state_dict shares the live memory
        trainer.job.objective = proximal(trainer, float(config.get("proximal-mu", 0.0)), sent)
        last = trainer.fit(local.steps)
        trainer.job.objective = trainer.job.objective.base  # type: ignore[attr-defined]
        finish_round(local, silo, stamp)
        new = traveling(trainer.adapted)
    f = cfg.federated
    if f.attack == "scale_update" and 0 <= silo.index < f.attackers:
        new = {k: sent[k] + f.attack_scale * (v - sent[k]) for k, v in new.items()}
    weight = 1 if KEY_CLIPPING_NORM in config else samples_of(trainer.job.source)
    metrics = {"num-examples": weight, "train/loss": float(last.get("train/loss", float("nan")))}
    return Message(RecordDict({"arrays": to_record(new), "metrics": MetricRecord(metrics),
                               "silo": ConfigRecord({"name": silo.name})}), reply_to=msg)


def accept(msg: Message, context: Context) -> tuple[Any, Silo, protocol.Stamp]:
    """The recipe, this silo and the message's stamp; raises Ignored for a stale message."""
    from trainwell.config import load_config

    config = msg.content["config"]
    cfg = load_config(text=str(config[protocol.RECIPE]))
    silo = resolve(cfg, dict(context.node_config), str(config.get(protocol.SILOS_DIR, "")))
    stamp = protocol.Stamp.of(config)
    with locked(silo.root):
        seen_path = silo.root / "seen.json"
        seen = protocol.read_seen(seen_path)
        why = protocol.stale(stamp, seen)
        if why:
            print(f"silo {silo.name}: ignored a {msg.metadata.message_type} message because {why}", file=sys.stderr)
            raise Ignored(f"silo {silo.name} ignored the message: {why}")
        protocol.write_json(seen_path, protocol.newer(stamp, seen))
    return cfg, silo, stamp


def resume_rng(local: Local) -> None:
    """Continue the silo's own random streams (dropout), whatever ran in this process since."""
    from trainwell.checkpoint.rng import RNGState

    RNGState().load_state_dict(local.rng)


def proximal(trainer: Any, mu: float, anchor: dict[str, torch.Tensor]) -> Any:
    """FedProx (Li et al. 2020): the local loss plus (mu / 2) ||w - w_global||^2 over the trained weights."""
    base = getattr(trainer.job.objective, "base", trainer.job.objective)
    if mu <= 0:
        def plain(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
            return base(model, batch)

        plain.base = base  # type: ignore[attr-defined]
        return plain
    params = [(p, anchor[n].to(p.device)) for n, p in trainer.model.named_parameters()
              if n in anchor and p.requires_grad]

    def objective(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> Any:
        out = base(model, batch)
        prox = sum(((p - w) ** 2).sum() for p, w in params)
        return replace(out, loss=out.loss + 0.5 * mu * prox)

    objective.base = base  # type: ignore[attr-defined]
    return objective
