"""The two Flower runtimes end to end, on two silos that each read their own table:

- the simulation runtime (Ray), as `trainwell train RECIPE` runs it;
- the deployment runtime on loopback: `trainwell federate server` and two `trainwell federate client`
  processes; the server is SIGKILLed in the middle of round 2, restarted with --resume, and the run
  ends with the same global weights as the undisturbed in-process run. Every process is stopped by
  its PID, and none is left behind.

Both give bit-identical weights to the in-process run of the same recipe: the silos are deterministic
(one thread each) and the server aggregates in the order of the silos' names.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import assert_same, final_weights, run_inprocess

ROUNDS = 2
SILOS = 2  # each silo costs the deployment a SuperNode and a ClientApp process per round


@pytest.fixture(scope="module")
def silos(tmp_path_factory) -> Path:
    """digits as four CSV tables: the server's held-out set and one table per silo."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("fed")
    d = load_digits()
    order = np.random.default_rng(0).permutation(len(d.target))
    x, y = d.data[order].astype(int), d.target[order]

    def write(path: Path, xs: np.ndarray, ys: np.ndarray) -> None:
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow([f"p{i}" for i in range(64)] + ["label"])
            w.writerows([*a, b] for a, b in zip(xs.tolist(), ys.tolist()))

    (root / "silos").mkdir()
    write(root / "server.csv", x[:300], y[:300])
    for i, (a, b) in enumerate(zip(np.array_split(x[300:], SILOS), np.array_split(y[300:], SILOS))):
        write(root / "silos" / f"hospital-{i}.csv", a, b)
    recipe = f"""
description = "digits tables in two silos (tests)"
[data]
name = "table"
path = "{root / 'server.csv'}"
label = "label"
standardize = false
[model]
name = "mlp"
hidden = [32]
dropout = 0.1
[objective]
name = "classify"
[optim]
lr = 3e-3
[schedule]
name = "constant"
warmup_steps = 0
[train]
batch_size = 32
seed = 0
threads = 1
[eval]
samples = 0
[log]
plots = false
tensorboard = false
progress = "lines"
[federated]
silos = {SILOS}
rounds = {ROUNDS}
local_steps = 3
partition = "folders"
silo_data = "{root / 'silos'}"
silo_eval = false
strategy = "fedadam"
strategy_options = {{eta = 0.01}}
"""
    (root / "recipe.toml").write_text(recipe)
    return root


@pytest.fixture(scope="module")
def reference(silos, tmp_path_factory) -> dict:
    from trainwell.config import load_config

    run = tmp_path_factory.mktemp("ref") / "run"
    run_inprocess(run, cfg=load_config(str(silos / "recipe.toml")))
    return final_weights(run)


def test_simulation_runtime(silos, reference, tmp_path, cli):
    out = cli("train", str(silos / "recipe.toml"), "--run-dir", str(tmp_path / "sim"), timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"round {ROUNDS}/{ROUNDS}: val/loss" in out.stdout
    summary = json.loads((tmp_path / "sim" / "summary.json").read_text())
    assert summary["rounds"] == ROUNDS and summary["missing_silos"] == {}
    assert sorted(p.name for p in (tmp_path / "sim" / "silos").iterdir()) == [f"hospital-{i}.csv" for i in range(SILOS)]
    assert_same(final_weights(tmp_path / "sim"), reference)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def wait_for(what, timeout: float, why: str, procs=()) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if what():
            return
        for p in procs:
            if p.poll() is not None:
                raise AssertionError(f"{why}: process {p.args[:6]} exited with {p.returncode}")
        time.sleep(0.5)
    raise AssertionError(f"{why}: not within {timeout:.0f} s")


def rounds_recorded(state: Path) -> set[int]:
    found = set()
    for f in state.glob("*/rounds.json"):
        try:
            found |= {int(k) for k in json.loads(f.read_text())}
        except ValueError:
            pass
    return found


def test_deployment_on_loopback_survives_a_sigkilled_server(silos, reference, tmp_path):
    from trainwell.federated.deploy import free_port

    port = free_port()
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = tmp_path / "logs"
    logs.mkdir()

    def launch(name: str, *args: str) -> subprocess.Popen:
        out = open(logs / f"{name}.log", "ab")
        return subprocess.Popen([sys.executable, "-m", "trainwell", "federate", *args], stdout=out,
                                stderr=subprocess.STDOUT, env=env)

    server_args = ("--port", str(port), "--host", "127.0.0.1", "--insecure")
    procs: dict[str, subprocess.Popen] = {}
    pids: set[int] = set()
    try:
        procs["server"] = launch("server", "server", str(silos / "recipe.toml"), "--run-dir", str(run), *server_args)
        for i in range(SILOS):
            procs[f"silo{i}"] = launch(f"silo{i}", "client", "--server", f"127.0.0.1:{port}", "--insecure",
                                       "--data", str(silos / "silos" / f"hospital-{i}.csv"),
                                       "--state", str(tmp_path / f"state{i}"))
        states = [tmp_path / f"state{i}" for i in range(SILOS)]
        # mid-run: round 1 is checkpointed and a silo has trained round 2, which the server has not aggregated
        wait_for(lambda: (run / "checkpoints" / "step-1").is_dir() and any(2 in rounds_recorded(s) for s in states),
                 400, "round 2 never started", procs.values())
        superlink = json.loads((run / "flower" / "pids.json").read_text())["superlink"]
        pids |= {superlink, procs["server"].pid}
        procs["server"].send_signal(signal.SIGKILL)
        procs["server"].wait()
        wait_for(lambda: not alive(superlink), 60, "the SuperLink outlived the killed server")

        resumed = launch("resumed", "server", "--resume", str(run), *server_args)
        procs["resumed"] = resumed
        assert resumed.wait(600) == 0, (logs / "resumed.log").read_text()[-3000:]
        pids.add(json.loads((run / "flower" / "pids.json").read_text())["superlink"])
    finally:
        for name, p in procs.items():  # every process by its PID: SIGTERM, then SIGKILL
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for name, p in procs.items():
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            pids.add(p.pid)
        for i in range(SILOS):
            f = tmp_path / f"state{i}" / "pids.json"
            if f.is_file():
                pids |= set(json.loads(f.read_text()).values())

    summary = json.loads((run / "summary.json").read_text())
    assert summary["rounds"] == ROUNDS and summary["server_starts"] == 2
    assert (run / "meta-resume-1.json").is_file()
    assert_same(final_weights(run), reference)
    # no stray processes: none of the PIDs, and nothing still serving this port or these folders
    wait_for(lambda: not any(alive(p) for p in pids), 60, f"processes left: {[p for p in pids if alive(p)]}")
    marks = (f":{port}", str(tmp_path))
    stray = [line for line in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
             if any(m in line for m in marks)]
    assert not stray, stray
