"""`trainwell compare`: overlaid plots per shared metric, the final/best table with the sweep's
knobs, compare.md, and one clear error for each kind of bad input."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

import figcheck  # noqa: E402
import paradigms  # noqa: E402
from trainwell.cli import app  # noqa: E402
from trainwell.track.compare import compare, metric_names  # noqa: E402
from trainwell.track.metrics import MetricsJSONL, read_metrics  # noqa: E402


@pytest.fixture(scope="session")
def sweep(paradigm_run, tiny_session, tmp_path_factory) -> list[Path]:
    """The tiny GPT run and the same run at another learning rate: a two-point lr sweep."""
    import trainwell

    base = paradigm_run("gpt").run_dir
    other = tmp_path_factory.mktemp("sweep") / "gpt-lr"
    recipe, sets = paradigms.recipes(Path(json.loads((base / "meta.json").read_text())["facts"]["data"]["path"]))["gpt"]
    trainwell.train(recipe, [*sets, "optim.lr=0.01"], run_dir=other)
    return [base, other]


def test_compare_overlays_every_shared_metric_and_tabulates_the_knobs(sweep, tmp_path):
    figures: dict = {}
    out = io.StringIO()
    with paradigms.recording_figures(figures):
        folder = compare(sweep, tmp_path / "cmp", stream=out)
    shared = metric_names(read_metrics(sweep[0] / "metrics.jsonl")) & metric_names(read_metrics(sweep[1] / "metrics.jsonl"))
    assert {"train/loss", "val/loss", "train/lr", "val/bpc"} <= shared
    assert sorted(p.name for p in folder.glob("*.png")) == sorted(m.replace("/", "_") + ".png" for m in shared)
    assert set(figures) == {m.replace("/", "_") + ".png" for m in shared}
    for name, fig in figures.items():
        assert figcheck.problems(fig) == [], name
        ax = fig.axes[0]
        assert ax.get_xlabel() == "tokens" and ax.child_axes[0].get_xlabel() == "optimizer step"
        legend = [t.get_text().removesuffix(" (smoothed)") for t in ax.get_legend().get_texts()]
        assert legend == ["lr=0.002", "lr=0.01"], name  # the knob names the runs

    md = (folder / "compare.md").read_text()
    text = out.getvalue()
    for r in sweep:  # the table's final val/loss is the last one each run logged
        vals = [x["val/loss"] for x in read_metrics(r / "metrics.jsonl") if "val/loss" in x]
        losses = [(x["train/loss"], x["step"]) for x in read_metrics(r / "metrics.jsonl") if "train/loss" in x]
        best, at = min(losses)
        row = next(line for line in md.splitlines() if line.startswith(f"| {r.name} |"))
        assert f"| {vals[-1]:.4g} |" in row and f"| {best:.4g} @ {at} |" in row, row
        assert r.name in text
    assert "| run | optim.lr | val/bpc final |" in md
    assert "optim.lr" in text and "0.01" in text
    for name in figures:
        assert f"]({name})" in md


def test_default_out_folder_is_next_to_the_runs(sweep):
    folder = compare(sweep, stream=io.StringIO())
    try:
        assert folder.parent == Path(__import__("os").path.commonpath([str(p.resolve().parent) for p in sweep]))
        assert folder.name.startswith("compare-") and (folder / "compare.md").is_file()
    finally:
        import shutil

        shutil.rmtree(folder)


def _fake_run(path: Path, metrics: dict[str, float]) -> Path:
    with MetricsJSONL(path / "metrics.jsonl") as sink:
        sink.log(1, metrics)
    return path


def test_bad_input_gets_one_clear_sentence_and_exit_2(sweep, tmp_path):
    from typer.testing import CliRunner

    runner = CliRunner()
    not_a_run = tmp_path / "photos"
    not_a_run.mkdir()
    cases = {
        "is not a run directory": [str(sweep[0]), str(not_a_run)],
        "at least two different run directories": [str(sweep[0]), str(sweep[0])],
        "share no metric": [str(_fake_run(tmp_path / "a", {"val/return": 1.0})),
                            str(_fake_run(tmp_path / "b", {"val/accuracy": 0.5}))],
    }
    for message, args in cases.items():
        result = runner.invoke(app, ["compare", *args, "--out", str(tmp_path / "never")])
        assert result.exit_code == 2, result.output
        assert message in result.output and "Traceback" not in result.output
        assert result.output.count("error:") == 1
    assert not (tmp_path / "never").exists()  # nothing written on bad input
