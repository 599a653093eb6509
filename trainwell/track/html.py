"""`trainwell report RUN_DIR --html`: one self-contained HTML page for a run.

Everything is inside the file: the plots and the episode GIF as base64 ``data:`` URIs, the CSS
inline, no script, no font or stylesheet to fetch. It opens offline, can be mailed or attached
to an issue, and shows what the run dir holds: the headline numbers, every plot, the samples,
the summary, the resolved config and the provenance from meta.json.
"""

from __future__ import annotations

import base64
import json
import re
from html import escape
from pathlib import Path
from typing import Any

from trainwell.track import fmt
from trainwell.track.report import summarize, summary_rows
from trainwell.track.xunit import read_json

# curves first (the order a person reads a run in), then each paradigm's own figures
_PLOT_ORDER = ("loss", "return", "lr", "grad_norm", "throughput")
_MEDIA = {".png": "image/png", ".gif": "image/gif"}
_PROVENANCE = (("recipe", "recipe"), ("trainwell", "trainwell"), ("git", "commit"), ("python", "python"),
               ("torch", "torch"), ("numpy", "numpy"), ("cuda", "CUDA"), ("cuda_devices", "GPUs"),
               ("device", "device"), ("cpu", "CPU"), ("cpu_count", "CPU cores"), ("torch_threads", "torch threads"),
               ("platform", "platform"), ("hostname", "host"), ("seed", "seed"), ("start_time", "started"),
               ("argv", "command"), ("world_size", "processes"), ("strategy", "strategy"),
               ("config_hash", "config hash"), ("resumed_from", "resumed from"))

_IN_PROVENANCE = {"seed", "trainwell", "commit", "torch", "start time"}  # summary rows shown there instead

_CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --card: #f6f8fa; --accent: #0969da; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
       color: var(--ink); background: #fff; }
main { max-width: 1240px; margin: 0 auto; padding: 28px 32px 48px; }
header { border-bottom: 1px solid var(--line); padding-bottom: 14px; margin-bottom: 20px; }
h1 { font-size: 26px; margin: 0 0 4px; font-weight: 650; }
h2 { font-size: 18px; margin: 30px 0 12px; padding-bottom: 6px; border-bottom: 1px solid var(--line); }
.sub { color: var(--muted); margin: 0; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(170px, 1fr)); gap: 12px; }
.card { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .k { color: var(--muted); font-size: 12.5px; text-transform: uppercase; letter-spacing: .03em; }
.card .v { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; }
.plots { display: grid; grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 16px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 8px; padding: 8px; background: #fff;
         display: flex; flex-direction: column; justify-content: center; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 13px; text-align: center; padding-top: 4px; }
figure img[src^="data:image/gif"] { width: auto; max-width: 100%; margin: 0 auto; }
.pairs { columns: 3 300px; column-gap: 32px; font-size: 14px; }
.pairs.wide { columns: 2 420px; }
.kv { display: flex; gap: 12px; break-inside: avoid; border-bottom: 1px solid var(--line); padding: 4px 0; }
.kv .k { color: var(--muted); flex: 0 0 42%; }
.kv .v { flex: 1; overflow-wrap: anywhere; font-variant-numeric: tabular-nums; }
pre { background: var(--card); border: 1px solid var(--line); border-radius: 8px; padding: 12px 14px;
      font: 13px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap;
      overflow-wrap: anywhere; margin: 0 0 12px; }
pre.config { columns: 3 300px; column-gap: 28px; }
details summary { cursor: pointer; color: var(--accent); margin-bottom: 8px; }
footer { color: var(--muted); font-size: 13px; margin-top: 36px; border-top: 1px solid var(--line); padding-top: 10px; }
@media (max-width: 800px) { .plots { grid-template-columns: 1fr; } }
"""


def data_uri(path: Path) -> str:
    return f"data:{_MEDIA[path.suffix.lower()]};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


def _figure(path: Path, alt: str, caption: str = "") -> str:
    text = f"<figcaption>{escape(caption)}</figcaption>" if caption else ""
    return f'<figure><img src="{data_uri(path)}" alt="{escape(alt)}">{text}</figure>'


def plot_files(run_dir: Path) -> list[Path]:
    """The run's PNGs: plots/*.png in reading order, then figures written at the run dir's top."""
    plots = sorted((run_dir / "plots").glob("*.png")) if (run_dir / "plots").is_dir() else []
    rank = {stem: i for i, stem in enumerate(_PLOT_ORDER)}
    plots.sort(key=lambda p: (rank.get(p.stem, len(rank)), p.stem))
    # report.png is this page's own screenshot (bench/report_screenshot.py), not a figure of the run
    return plots + sorted(p for p in run_dir.glob("*.png") if p.name != "report.png")


def _pairs(rows: list[tuple[str, str]], cls: str) -> str:
    """Label/value pairs that flow into as many columns as the width allows."""
    body = "".join(f'<div class="kv"><span class="k">{escape(k)}</span><span class="v">{escape(v)}</span></div>'
                   for k, v in rows)
    return f'<div class="{cls}">{body}</div>'


def _text(value: Any) -> str:
    if isinstance(value, float):
        return fmt.sig(value)
    if isinstance(value, list):
        return " ".join(str(v) for v in value) if value else "none"
    if isinstance(value, dict):
        return json.dumps(value, default=str)
    return str(value)


def provenance_rows(meta: dict[str, Any]) -> list[tuple[str, str]]:
    rows = []
    for key, label in _PROVENANCE:
        value = meta.get(key)
        if key == "git" and isinstance(value, dict):
            value = f"{value.get('commit', '?')}{' (uncommitted changes)' if value.get('dirty') else ''}"
        if value is not None and value != "":
            rows.append((label, _text(value)))
    return rows


def headline(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """The few numbers shown as cards: evaluation results, steps and time."""
    cards: list[tuple[str, str]] = []
    for key, value in summary.items():
        if (isinstance(value, (int, float)) and not isinstance(value, bool)
                and re.match(r"(val|test|best|heldout)_", key) and not key.endswith(("_std", "_step", "_seconds"))):
            cards.append((key.replace("_", " "), fmt.sig(float(value))))
    cards = cards[:8]
    if summary.get("steps"):
        cards.append(("optimizer steps", str(summary["steps"])))
    for key, label in (("tokens_seen", "tokens"), ("env_steps", "env steps"), ("samples_seen", "samples")):
        if isinstance(summary.get(key), (int, float)):
            cards.append((label, fmt.human_rate(summary[key]).removesuffix(".0")))
            break
    wall = summary.get("wall_time_s", summary.get("wall_seconds"))
    if isinstance(wall, (int, float)):
        cards.append(("wall time", fmt.human_duration(wall)))
    return cards


def render_html(run_dir: Path) -> str:
    run_dir = Path(run_dir)
    summary = summarize(run_dir)
    meta = read_json(run_dir / "meta.json")
    config_text = (run_dir / "config.toml").read_text(encoding="utf-8") if (run_dir / "config.toml").is_file() else ""
    description = next((line.split("=", 1)[1].strip().strip("'\"") for line in config_text.splitlines()
                        if line.startswith("description")), "")
    started = meta.get("start_time", "")
    subtitle = " · ".join(escape(str(x)) for x in (meta.get("recipe"), description, started) if x)

    parts = [f"<header><h1>{escape(run_dir.name)}</h1><p class=\"sub\">{subtitle}</p></header>"]
    parts.append('<section><div class="cards">' + "".join(
        f'<div class="card"><div class="k">{escape(k)}</div><div class="v">{escape(v)}</div></div>'
        for k, v in headline(summary)) + "</div></section>")

    # each PNG carries its own title; the episode GIF (RL) sits in the same grid
    figures = [_figure(p, f"{p.stem} plot") for p in plot_files(run_dir)]
    figures += [_figure(g, g.stem, f"{g.name}: one deterministic evaluation episode of the trained policy")
                for g in sorted(run_dir.glob("*.gif"))]
    if figures:
        parts.append("<h2>Plots</h2><div class=\"plots\">" + "".join(figures) + "</div>")
    samples = run_dir / "samples.txt"
    if samples.is_file():
        blocks = [b.strip("\n") for b in re.split(r"^--- sample \d+ ---\n", samples.read_text(encoding="utf-8"),
                                                  flags=re.M) if b.strip()]
        parts.append("<h2>Samples</h2>" + "".join(f"<pre>{escape(b)}</pre>" for b in blocks))

    rows = [(k, v) for k, v in summary_rows(summary) if k not in _IN_PROVENANCE]
    parts.append("<h2>Summary</h2>" + _pairs(rows, "pairs"))
    provenance = provenance_rows(meta)
    resumes = sorted(run_dir.glob("meta-resume-*.json"))
    if resumes:
        provenance.append(("resumed at step", ", ".join(p.stem.removeprefix("meta-resume-") for p in resumes)))
    parts.append("<h2>Provenance</h2>" + _pairs(provenance, "pairs wide"))
    if config_text:
        parts.append("<h2>Config</h2><details open><summary>config.toml (resolved, exactly as run)</summary>"
                     f"<pre class=\"config\">{escape(config_text)}</pre></details>")
    parts.append(f"<footer>trainwell {escape(str(meta.get('trainwell', '')))} · written from {escape(str(run_dir))}"
                 " · self-contained: images are embedded, nothing is fetched</footer>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{escape(run_dir.name)} — trainwell report</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


def write_html(run_dir: Path, out: Path | None = None) -> Path:
    """Write the report (default ``RUN_DIR/report.html``) atomically; return its path."""
    import os

    out = Path(out) if out is not None else Path(run_dir) / "report.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(render_html(run_dir), encoding="utf-8")
    os.replace(tmp, out)
    return out
