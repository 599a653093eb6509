"""`trainwell report RUN --html`: one self-contained page (images embedded, nothing to fetch) with
the run's plots, GIF, samples, summary, config and provenance."""

from __future__ import annotations

import base64
import json
import re
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

import pytest

pytest.importorskip("matplotlib")

from trainwell.cli import app  # noqa: E402
from trainwell.track.html import plot_files  # noqa: E402

# elements that load something from elsewhere (or run code); a self-contained report has none
_FETCHING = {"link", "script", "iframe", "object", "embed", "source", "video", "audio", "track", "base", "frame"}


class Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str]]] = []
        self.styles: list[str] = []
        self.pre: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("style", "pre"):
            self._in = tag
            (self.styles if tag == "style" else self.pre).append("")

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "style":
            self.styles[-1] += data
        elif self._in == "pre":
            self.pre[-1] += data


def parse(path: Path) -> Page:
    page = Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def assert_self_contained(page: Page) -> None:
    for tag, attrs in page.tags:
        assert tag not in _FETCHING, tag
        for name, value in attrs.items():
            assert not re.search(r"https?:|^\s*//|^\s*file:", value, re.I), (tag, name, value[:80])
            if name in ("src", "srcset", "poster", "data"):
                assert value.startswith("data:"), (tag, name, value[:80])
            if name == "href":
                assert value.startswith("#"), (tag, value)
    for css in page.styles:
        assert not re.search(r"url\(|@import|https?:", css, re.I)


def test_rl_report_embeds_plots_and_gif_and_fetches_nothing(paradigm_run, tmp_path):
    from typer.testing import CliRunner

    run = paradigm_run("ppo").run_dir
    out = tmp_path / "ppo.html"
    result = CliRunner().invoke(app, ["report", str(run), "--html", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"report: {out}" in result.output
    page = parse(out)
    assert_self_contained(page)

    images = [attrs["src"] for tag, attrs in page.tags if tag == "img"]
    expected = plot_files(run) + [run / "episode.gif"]
    assert len(images) == len(expected) == 6  # loss, return, lr, grad_norm, throughput + the GIF
    for src, path in zip(images, expected):  # each embedded byte for byte, with its media type
        kind, data = src.split(",", 1)
        assert kind == f"data:image/{path.suffix[1:]};base64"
        assert base64.b64decode(data) == path.read_bytes(), path.name
    text = unescape(out.read_text(encoding="utf-8"))
    meta = json.loads((run / "meta.json").read_text())
    summary = json.loads((run / "summary.json").read_text())
    for fact in (meta["git"]["commit"], meta["torch"], meta["hostname"], meta["config_hash"], "cartpole_ppo",
                 f"{summary['val_return']:.4g}", "env steps"):
        assert fact in text, fact
    assert (run / "config.toml").read_text(encoding="utf-8") in page.pre


def test_text_report_shows_the_samples(paradigm_run):
    run = paradigm_run("gpt").run_dir
    from trainwell.track.html import write_html

    page = parse(write_html(run))
    assert_self_contained(page)
    samples = (run / "samples.txt").read_text(encoding="utf-8")
    shown = [p for p in page.pre if p in samples]
    assert shown and all(len(p) > 16 for p in shown)  # the sample text itself, not a placeholder
    assert (run / "report.html").is_file()


def test_the_check_rejects_an_external_reference(tmp_path):
    """assert_self_contained is not vacuous."""
    for bad in ('<img src="https://example.org/a.png">', '<link rel="stylesheet" href="x.css">',
                "<style>body { background: url(x.png) }</style>", '<a href="http://example.org">x</a>'):
        path = tmp_path / "bad.html"
        path.write_text(f"<html><body>{bad}</body></html>")
        with pytest.raises(AssertionError):
            assert_self_contained(parse(path))
