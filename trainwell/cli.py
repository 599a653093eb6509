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
    try:
        return fn()
    except TrainwellError as e:
        fail(e)


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
def report(run_dir: Path = typer.Argument(..., help="A run directory.")) -> None:
    """Print a run's summary and (re)draw its plots."""

    def go() -> None:
        if not (run_dir / "metrics.jsonl").is_file():
            raise TrainwellError(f"{run_dir} has no metrics.jsonl; pass a run directory written by `trainwell train`.")
        from trainwell.track.plots import draw_plots
        from trainwell.track.report import render_summary, summarize

        render_summary(summarize(run_dir))
        for path in draw_plots(run_dir):
            typer.echo(f"plot: {path}")

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
        from trainwell.engine.inference import generate as run_generate

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
        from trainwell.engine.inference import eval_checkpoint

        for key, value in eval_checkpoint(run_dir, checkpoint, merge=merge).items():
            typer.echo(f"{key:<20} {value:.4f}" if isinstance(value, float) else f"{key:<20} {value}")

    guarded(go)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
