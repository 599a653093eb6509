"""One silo's local training: trainwell's own Trainer, kept between rounds, its state on the silo's disk.

A silo builds the Trainer once (in the simulation runtime the process serves many rounds and keeps it
in memory; the deployment runtime starts a process per message and rebuilds it), and each round:
loads the global weights into ``trainer.model``, trains ``fit(k)`` for its local steps with its own
optimizer state and data position, and saves a checkpoint of its whole state (trainwell's format) plus
``rounds.json`` (round -> step). A round that must be trained again (the server restarted before it
checkpointed that round) starts from the state saved after the previous round, so it ends the same.

    <silo state>/seen.json          newest message stamp accepted (protocol.py)
    <silo state>/<run token>/       the silo's own trainwell run dir: config.toml, metrics.jsonl,
                                    checkpoints/step-N (model, optimizer, data position, RNG), rounds.json
"""

from __future__ import annotations

import copy
import fcntl
import json
import zlib
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import torch

from trainwell.checkpoint.rng import RNGState
from trainwell.config.schema import Config, FederatedConfig
from trainwell.federated.partition import folder_entries, silo_names, silo_source
from trainwell.federated.protocol import Stamp, write_json
from trainwell.errors import TrainwellError


@dataclass(frozen=True)
class Silo:
    name: str  # shown in the server's summary
    index: int  # position in federated.silo_data / the partition (-1: a real silo with its own data)
    data: str  # this silo's own data (image folder, table or text file); "" = its partition of the recipe's
    root: Path  # its state folder


@dataclass
class Local:
    """A built silo Trainer and the round whose end state it holds (0: freshly built)."""

    trainer: Any
    round_done: int
    rng: dict[str, Any]  # the process-wide RNG streams of that state (several silos share one process)
    steps: int  # local optimizer steps per round


_BUILT: dict[tuple[str, str], Local] = {}  # (run token, silo folder) -> Local, in this process


def seed_offset(name: str) -> int:
    """Each silo's own seed (dropout, data order) from its name, the same in every runtime."""
    return 1 + zlib.crc32(name.encode()) % 1_000_000


def silo_config(cfg: Config, silo: Silo) -> Config:
    """The recipe as one silo trains it: its own data and seed, a schedule over all rounds, quiet."""
    s = copy.deepcopy(cfg)
    f = cfg.federated
    s.run.name = silo.name
    s.train.seed = cfg.train.seed + seed_offset(silo.name)
    if f.local_epochs:
        s.train.epochs = f.rounds * f.local_epochs
    else:
        s.train.steps, s.train.epochs = f.rounds * f.local_steps, 0
    if silo.data:
        s.data.path = silo.data
        if s.data.name == "text":
            s.data.source = "file"
    s.checkpoint.every, s.checkpoint.keep, s.checkpoint.keep_best = 10**9, 2, False  # saved per round, below
    s.checkpoint.async_save = False
    s.log.progress, s.log.tensorboard, s.log.plots = "off", False, False
    s.eval.every, s.eval.samples = 0, 0
    s.federated = FederatedConfig()
    return s


def builder(cfg: Config, silo: Silo) -> Any:
    """The silo's Job builder: the recipe's Job, on this silo's share of the data."""
    from trainwell.paradigms import build_job

    def build(scfg: Config, device: torch.device) -> Any:
        job = build_job(scfg, device)
        if not silo.data:
            job.source = silo_source(replace(scfg, federated=cfg.federated), job, silo.index)
            job.batches_per_epoch = job.source.batches_per_epoch()
        f = cfg.federated
        if f.attack == "flip_labels" and 0 <= silo.index < f.attackers:
            job.source = flipped(job.source, int(job.facts["data"]["classes"]))
        job.sample, job.finish = None, None  # the server writes samples and reports
        return job

    return build


def flipped(source: Any, classes: int) -> Any:
    """A label-flipping attacker's data: label y becomes classes - 1 - y."""
    from trainwell.data.samples import IndexBatches

    fetch = source.fetch

    def bad(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = fetch(idx)
        return {**batch, "target": classes - 1 - batch["target"]}

    return IndexBatches(source.n, bad, batch_size=source.batch_size, seed=source.seed)


def samples_of(source: Any) -> int:
    """How much data the silo holds (FedAvg's weight): samples, or tokens of a text silo."""
    if hasattr(source, "n"):
        return int(source.n)
    return int(len(source.tokens))


@contextmanager
def locked(root: Path) -> Iterator[None]:
    """One message at a time per silo: the deployment runtime may run a dead run's message next to a
    live one, and both would write the same state."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def rounds_done(run_dir: Path) -> dict[int, int]:
    try:
        return {int(k): int(v) for k, v in json.loads((run_dir / "rounds.json").read_text()).items()}
    except (OSError, ValueError):
        return {}


def local_at(cfg: Config, silo: Silo, stamp: Stamp) -> Local:
    """The silo's Trainer holding its state after the newest round it finished before ``stamp.round``."""
    run_dir = silo.root / stamp.run
    done = rounds_done(run_dir)
    prev = max((r for r in done if r < stamp.round), default=0)
    key = (stamp.run, str(silo.root))
    local = _BUILT.get(key)
    if local is not None and local.round_done == prev:
        return local
    if local is None or prev == 0:  # nothing built yet, or back to the very start: a fresh Trainer
        if local is not None:
            local.trainer.close()
        local = _BUILT[key] = build(cfg, silo, run_dir)
    if prev:
        local.trainer.load(run_dir / "checkpoints" / f"step-{done[prev]}")
        local.round_done, local.rng = prev, RNGState().state_dict()
    return local


def built(cfg: Config, silo: Silo, stamp: Stamp) -> Local:
    """The silo's Trainer in whatever state this process holds it (built fresh if none): for evaluation."""
    key = (stamp.run, str(silo.root))
    if key not in _BUILT:
        _BUILT[key] = build(cfg, silo, silo.root / stamp.run)
    return _BUILT[key]


def build(cfg: Config, silo: Silo, run_dir: Path) -> Local:
    from trainwell.engine.trainer import Trainer

    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    trainer = Trainer(silo_config(cfg, silo), run_dir, builder(cfg, silo))
    f = cfg.federated
    accum = trainer.cfg.train.grad_accum
    steps = max(1, f.local_epochs * trainer.job.batches_per_epoch // accum) if f.local_epochs else f.local_steps
    return Local(trainer, 0, RNGState().state_dict(), steps)


def finish_round(local: Local, silo: Silo, stamp: Stamp) -> None:
    """Checkpoint the silo's state after this round, then record which step that is."""
    run_dir = silo.root / stamp.run
    step = local.trainer.loop.step
    local.trainer.save(step)
    done = rounds_done(run_dir)
    done = {r: s for r, s in done.items() if r < stamp.round}  # a repeated round replaces the later ones
    done[stamp.round] = step
    write_json(run_dir / "rounds.json", {str(r): s for r, s in sorted(done.items())})
    local.round_done, local.rng = stamp.round, RNGState().state_dict()


def resolve(cfg: Config, node_config: dict[str, Any], silos_dir: str) -> Silo:
    """Which silo this process serves: from the simulation's partition id, or a SuperNode's node config."""
    f = cfg.federated
    if "partition-id" in node_config:  # Flower's simulation runtime
        index = int(node_config["partition-id"])
        name = silo_names(cfg)[index]
        data = str(folder_entries(f.silo_data, f.silos)[index]) if f.partition == "folders" else ""
        return Silo(name, index, data, Path(silos_dir) / name)
    data = str(node_config.get("data", ""))
    index = int(node_config.get("silo", -1))
    if not data and index < 0:
        raise TrainwellError("this SuperNode was started without --data PATH (or --silo N for a share of the "
                             "server's data); restart it with `trainwell federate client --data PATH`.")
    if not data and f.partition == "folders":
        data = str(folder_entries(f.silo_data, f.silos)[index])
    name = str(node_config.get("name", "")) or (Path(data).name if data else silo_names(cfg)[index])
    return Silo(name, index, data, Path(str(node_config.get("state", f"trainwell-silo-{name}"))).expanduser())
