"""One machine: Flower's simulation runtime runs the ServerApp in this process and the silos' ClientApps
in Ray actors (one CPU each), `federated.silos` virtual SuperNodes. `trainwell train RECIPE` with
federated.silos > 0 lands here; `--resume RUN` continues from the newest round checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from trainwell.config import Config


def run(cfg: Config, run_dir: Path) -> dict[str, Any]:
    """Train the remaining rounds of the federated run in ``run_dir``; returns the summary."""
    from trainwell.federated import need_flower

    need_flower()
    import logging

    from flwr.serverapp import Grid, ServerApp
    from flwr.simulation import run_simulation

    from trainwell.federated.client import app as client_app
    from trainwell.federated.server import finish, prepare, serve

    plan = prepare(cfg, Path(run_dir), simulation=True)  # every check before Ray starts
    server_app = ServerApp()

    @server_app.main()
    def main(grid: Grid, context: Any) -> None:
        serve(grid, plan)

    cpus = os.cpu_count() or 1
    gpus = 0.0
    import torch

    if torch.cuda.is_available():
        gpus = min(1.0, torch.cuda.device_count() / cfg.federated.silos)
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": gpus},
               "init_args": {"num_cpus": cpus, "include_dashboard": False, "logging_level": logging.ERROR,
                             "log_to_driver": False}}
    logging.getLogger("flwr").setLevel(logging.ERROR)  # run_simulation's deprecation notice; rounds print below
    try:
        run_simulation(server_app, client_app, num_supernodes=cfg.federated.silos, backend_config=backend)
    finally:
        for sink in plan.sinks:
            sink.close()
    return finish(plan)
