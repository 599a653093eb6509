"""The README's "Your own model, data and loss" example runs as printed, and learns."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).parents[2] / "README.md"


def test_readme_example_runs_and_learns(tmp_path, monkeypatch, capsys):
    text = README.read_text(encoding="utf-8")
    block = re.search(r"<!-- byo-example.*?-->\n```python\n(.*?)```", text, re.S)
    assert block, "the README lost its bring-your-own example"
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), scope)
    result = scope["result"]
    assert result.summary["steps"] == 300
    # y = x^2 on [-2, 2] has variance 64/45 ~ 1.42: the fitted model must be far better than the mean
    assert result.summary["val_loss"] < 0.05, result.summary
    assert (tmp_path / "runs" / "squares" / "checkpoints" / "step-300").is_dir()
    assert (tmp_path / "runs" / "squares" / "plots" / "loss.png").is_file()
