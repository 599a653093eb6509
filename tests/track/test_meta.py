"""run_meta records what produced a run and never fails."""

import json
import sys
from datetime import datetime
from pathlib import Path

import trainwell
from trainwell.track import meta
from trainwell.track.meta import run_meta, write_json


def test_run_meta_fields(tmp_path: Path) -> None:
    m = run_meta(seed=7, extra={"run": "x"})
    assert m["trainwell"] == trainwell.__version__
    assert m["seed"] == 7 and m["run"] == "x"
    assert m["python"] == sys.version.split()[0]
    assert m["torch"] and m["numpy"] and m["hostname"]
    assert m["torch_threads"] >= 1 and m["cpu_count"] >= 1
    assert isinstance(m["cuda_devices"], list)
    assert datetime.fromisoformat(m["start_time"]).utcoffset().total_seconds() == 0
    assert m["argv"] == sys.argv
    if m["git"] is not None:  # this test may run from an sdist/wheel, not a checkout
        assert len(m["git"]["commit"]) == 40 and isinstance(m["git"]["dirty"], bool)
    write_json(tmp_path / "meta.json", m)
    assert json.loads((tmp_path / "meta.json").read_text())["seed"] == 7


def test_git_info_is_none_without_git(monkeypatch) -> None:
    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(meta.subprocess, "run", no_git)
    assert meta.git_info() is None
    assert run_meta(seed=0)["git"] is None


def test_git_info_outside_a_checkout(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(meta, "_PKG_DIR", tmp_path)
    assert meta.git_info() is None
