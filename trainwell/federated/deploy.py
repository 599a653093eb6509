"""Real silos: Flower's deployment runtime, started (and stopped, by PID) by trainwell.

    server:  trainwell federate server RECIPE   -> flower-superlink (Fleet + Control + ServerAppIo on one
                                                   port) and `flwr run` of a tiny Flower app whose
                                                   ServerApp is ``server_app`` below
    silo:    trainwell federate client --server HOST:PORT --data PATH
                                                -> flower-supernode, which runs ``client.app`` (a fresh
                                                   process per message) on the silo's own data

Every child process is started with PR_SET_PDEATHSIG (Linux): if the trainwell process dies, even by
SIGKILL, its SuperLink / SuperNode dies with it (and Flower's own helpers watch their parent's PID),
so killing the server's PID kills the whole server. A clean stop sends SIGINT, waits, then SIGKILL.
Runtime dependency installation is switched off (it would `uv sync` the app's dependencies, torch
included): the silos run the trainwell installed on them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainwell.config import Config, load_config, to_toml
from trainwell.errors import ConfigError, TrainwellError
from trainwell.federated import partition, strategies
from trainwell.federated.protocol import write_json

RUN_DIR_KEY = "trainwell-run-dir"
RESTARTS, RESTART_S = 30, 10.0  # a silo's SuperNode that gives up (server down, key not yet registered) restarts
CONNECTION = "trainwell"


@dataclass(frozen=True)
class Security:
    """TLS and SuperNode authentication (see README, "Federated training: production")."""

    insecure: bool = True
    certificates: Path | None = None  # server: folder with ca.crt, server.pem, server.key
    root_certificate: Path | None = None  # silo: the CA that signed the server's certificate
    auth_keys: Path | None = None  # server: folder of silos' public keys (*.pub); enables SuperNode auth
    auth_key: Path | None = None  # silo: its private key


def server_app() -> Any:
    """The ServerApp a SuperLink runs for `trainwell federate server` (the run dir comes in run_config)."""
    from flwr.serverapp import Grid, ServerApp

    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Any) -> None:
        from trainwell.federated.server import finish, prepare, serve

        run_dir = Path(str(context.run_config[RUN_DIR_KEY]))
        plan = prepare(load_config(str(run_dir / "config.toml")), run_dir, simulation=False)
        serve(grid, plan)
        finish(plan)

    return app


APP_FILES = {
    "pyproject.toml": """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "trainwell-federated"
version = "1.0.0"
description = "trainwell's federated ServerApp and ClientApp (the code is the installed trainwell)"
license = "MIT"
dependencies = []

[tool.flwr.app]
publisher = "trainwell"

[tool.flwr.app.components]
serverapp = "trainwell_app:server"
clientapp = "trainwell_app:client"

[tool.flwr.app.config]
trainwell-run-dir = ""
""",
    "trainwell_app.py": '''"""Flower app entry points: trainwell's ServerApp and ClientApp, from the trainwell installed here."""
import trainwell.federated.client as _client
import trainwell.federated.deploy as _deploy

client = _client.app
server = _deploy.server_app()
''',
}


# ---------------------------------------------------------------------------- processes


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when its parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    if sys.platform.startswith("linux"):
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


def environment() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("FLWR_TELEMETRY_ENABLED", "0")
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def tool(name: str) -> str:
    """A Flower command next to this Python (the venv's bin), else on PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.exists() else name


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "ab")
    try:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env or environment(),
                                preexec_fn=die_with_parent, start_new_session=True)
    except FileNotFoundError:
        raise ConfigError(f"{cmd[0]} is not installed; pip install 'trainwell[federated]'.") from None
    finally:
        out.close()


def stop(proc: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGINT (Flower's clean shutdown), then SIGKILL after ``grace_s``; waits for the PID to go."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(grace_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def wait_port(host: str, port: int, proc: subprocess.Popen, log: Path, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise TrainwellError(f"{Path(proc.args[0]).name} exited with status {proc.returncode} before it "
                                 f"listened on port {port}: {tail(log)}")
        try:
            with socket.create_connection((host if host not in ("0.0.0.0", "::") else "127.0.0.1", port), 1.0):
                return
        except OSError:
            time.sleep(0.3)
    raise TrainwellError(f"{Path(proc.args[0]).name} did not listen on port {port} within {timeout_s:.0f} s; "
                         f"see {log}.")


def tail(log: Path, lines: int = 8) -> str:
    try:
        return " | ".join(log.read_text(errors="replace").strip().splitlines()[-lines:])
    except OSError:
        return "(no log)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------- the server


def serve(cfg: Config, run_dir: Path, *, host: str = "0.0.0.0", port: int = 9093,
          security: Security = Security()) -> dict[str, Any]:
    """Start a SuperLink on ``port``, run the federated run of ``run_dir`` (resuming it if it has round
    checkpoints), stop the SuperLink; returns the summary."""
    from trainwell.federated import need_flower

    need_flower()
    partition.check(cfg)
    strategies.build(cfg, evaluate_on_clients=True)  # bad strategy options fail here, before anything starts
    run_dir = run_dir.resolve()
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.toml").write_text(to_toml(cfg), encoding="utf-8")
    flower = run_dir / "flower"
    app = flower / "app"
    app.mkdir(parents=True, exist_ok=True)
    for name, text in APP_FILES.items():
        (app / name).write_text(text, encoding="utf-8")
    home = flower / "home"
    home.mkdir(exist_ok=True)
    connection = {"address": f"127.0.0.1:{port}"}
    if security.insecure:
        connection["insecure"] = True
    elif security.certificates is not None:
        connection["root-certificates"] = str((security.certificates / "ca.crt").resolve())
    (home / "config.toml").write_text(
        f'[superlink]\ndefault = "{CONNECTION}"\n\n[superlink.{CONNECTION}]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in connection.items()), encoding="utf-8")
    cmd = [tool("flower-superlink"), "--host", host, "--port", str(port), "--database", str(flower / "state.db"),
           "--disable-runtime-dependency-installation", *tls_args(security)]
    if security.auth_keys is not None:
        cmd.append("--enable-supernode-auth")
    superlink = start(cmd, flower / "superlink.log", env={**environment(), "FLWR_HOME": str(home)})
    pids = {"server": os.getpid(), "superlink": superlink.pid}
    write_json(flower / "pids.json", pids)
    env = {**environment(), "FLWR_HOME": str(home)}
    try:
        wait_port(host, port, superlink, flower / "superlink.log")
        if security.auth_keys is not None:
            register_keys(security.auth_keys, env, flower / "run.log")
        run = subprocess.Popen([tool("flwr"), "run", str(app), CONNECTION, "--stream", "--run-config",
                                f"{RUN_DIR_KEY}={json.dumps(str(run_dir))}"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, preexec_fn=die_with_parent)
        pids["flwr-run"] = run.pid
        write_json(flower / "pids.json", pids)
        with open(flower / "run.log", "ab") as log:
            assert run.stdout is not None
            for line in run.stdout:  # the ServerApp's output, streamed by the SuperLink
                log.write(line)
                log.flush()
                sys.stdout.write(line.decode(errors="replace"))
                sys.stdout.flush()
        code = run.wait()
    finally:
        stop(superlink)
    summary_path = run_dir / "summary.json"
    if code != 0 or not summary_path.is_file():
        raise TrainwellError(f"the federated run did not finish (flwr run exit status {code}); the server's log "
                             f"is {flower / 'run.log'}. Continue it with `trainwell federate server --resume "
                             f"{run_dir}` once the cause is fixed.")
    return json.loads(summary_path.read_text(encoding="utf-8"))


def tls_args(security: Security) -> list[str]:
    if security.insecure:
        return ["--insecure"]
    if security.certificates is None:
        raise ConfigError("a TLS SuperLink needs --certificates DIR (ca.crt, server.pem, server.key), or "
                          "--insecure for a trusted network.")
    c = security.certificates
    files = [c / "ca.crt", c / "server.pem", c / "server.key"]
    for f in files:
        if not f.is_file():
            raise ConfigError(f"--certificates {c}: {f.name} is missing; see the README (Federated training, "
                              f"production) for how to make the three files.")
    return ["--ssl-ca-certfile", str(files[0]), "--ssl-certfile", str(files[1]), "--ssl-keyfile", str(files[2])]


def register_keys(folder: Path, env: dict[str, str], log: Path) -> None:
    """SuperNode authentication: only silos whose public key is registered may join."""
    keys = sorted(folder.glob("*.pub"))
    if not keys:
        raise ConfigError(f"--auth-keys {folder} holds no *.pub public keys of silos.")
    for key in keys:
        out = subprocess.run([tool("flwr"), "supernode", "register", str(key), CONNECTION], env=env,
                             capture_output=True, text=True)
        with open(log, "a") as f:
            f.write(out.stdout + out.stderr)
        if out.returncode != 0:
            raise TrainwellError(f"registering silo key {key} failed: {(out.stdout + out.stderr).strip()[-300:]}")


# ---------------------------------------------------------------------------- a silo


def join(server: str, *, data: str = "", state: Path, name: str = "", silo: int = -1,
         security: Security = Security(), runtime_port: int = 0) -> int:
    """Run a SuperNode for this silo until it is stopped (SIGINT / SIGTERM); returns its exit status."""
    from trainwell.federated import need_flower

    need_flower()
    if data and not Path(data).expanduser().exists():
        raise ConfigError(f"--data {data} does not exist; pass this silo's image folder, table or text file.")
    if not data and silo < 0:
        raise ConfigError("pass --data PATH (this silo's own data), or --silo N to train on share N of the "
                          "server's recipe data (for trying a deployment on one machine).")
    state = state.expanduser().resolve()
    state.mkdir(parents=True, exist_ok=True)
    node = {"state": str(state)}
    if data:
        node["data"] = str(Path(data).expanduser().resolve())
    if name:
        node["name"] = name
    parts = [f"{k}={json.dumps(v)}" for k, v in node.items()] + ([f"silo={silo}"] if silo >= 0 else [])
    cmd = [tool("flower-supernode"), "--superlink", server, "--node-config", " ".join(parts),
           "--port", str(runtime_port or free_port())]
    if security.insecure:
        cmd.append("--insecure")
    elif security.root_certificate is not None:
        cmd += ["--root-certificates", str(security.root_certificate)]
    else:
        raise ConfigError("a TLS connection needs --root-certificates CA.crt (the CA that signed the server's "
                          "certificate), or --insecure for a trusted network.")
    if security.auth_key is not None:
        cmd += ["--auth-supernode-private-key", str(security.auth_key)]
    env = {**environment(), "FLWR_HOME": str(state / "flower-home")}
    asked: list[int] = []
    current: list[subprocess.Popen] = []

    def on_signal(signum: int, frame: Any) -> None:  # only signal here: the main loop below reaps the PID
        asked.append(signum)
        if current and current[0].poll() is None:
            current[0].send_signal(signal.SIGINT)

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, on_signal)
    label = name or (Path(data).name if data else f"silo {silo}")
    for attempt in range(RESTARTS + 1):
        proc = start(cmd, state / "supernode.log", env=env)
        current[:] = [proc]
        write_json(state / "pids.json", {"client": os.getpid(), "supernode": proc.pid})
        print(f"silo {label}: SuperNode (PID {proc.pid}) connecting to {server}; state in {state}; log "
              f"{state / 'supernode.log'}", flush=True)
        deadline = None
        while proc.poll() is None:  # reaped promptly: Flower's helpers watch this PID and exit once it is gone
            time.sleep(0.2)
            if asked and deadline is None:
                deadline = time.monotonic() + 15.0
            if deadline is not None and time.monotonic() > deadline:
                proc.kill()
        if asked or proc.returncode == 0:
            break
        # e.g. the server is not up yet, or has not registered this silo's key yet (SuperNode exit 305)
        print(f"silo {label}: the SuperNode exited with status {proc.returncode} ({tail(state / 'supernode.log', 2)}); "
              f"starting it again in {RESTART_S:.0f} s ({RESTARTS - attempt} tries left)", file=sys.stderr, flush=True)
        for _ in range(int(RESTART_S / 0.2)):
            if asked:
                break
            time.sleep(0.2)
        if asked:
            break
    return 0 if asked else int(proc.returncode)
