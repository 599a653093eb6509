"""Federated training on Flower: each silo trains on its own data with trainwell's Trainer, and only
model weights (for LoRA: only the adapters) travel to a server that aggregates them.

    partition.py   splitting one machine's data into silos (iid, Dirichlet by label, folders, packages)
    protocol.py    the stamp on every message, and when a silo ignores a stale one
    silo.py        a silo's Trainer across rounds, its state on its own disk
    client.py      the Flower ClientApp (train / evaluate handlers, DP clipping)
    strategies.py  the Flower strategy from [federated], and its state for checkpoints
    privacy.py     noise calibration and epsilon from Flower's RDP accountant
    server.py      the rounds: resumable Strategy.start, per-round checkpoints, the summary
    simulate.py    one machine: Flower's simulation runtime (Ray), for `trainwell train`
    deploy.py      real silos: SuperLink + ServerApp, SuperNode + ClientApp (`trainwell federate`)

Flower is an optional dependency: pip install 'trainwell[federated]'.
"""

import os

# Flower would otherwise report usage to its servers from every process it starts (inherited by them).
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")


def need_flower() -> None:
    from trainwell.errors import ConfigError

    try:
        import flwr  # noqa: F401
    except ImportError:
        raise ConfigError("federated training needs Flower: pip install 'trainwell[federated]'.") from None
