"""The CLI imports trainwell.track on every call; it must not pull in heavy libraries."""

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "matplotlib", "tensorboard")
LIGHT_MODULES = (
    "trainwell.track",
    "trainwell.track.console",
    "trainwell.track.metrics",
    "trainwell.track.fmt",
    "trainwell.track.report",
    "trainwell.track.meta",
    "trainwell.track.plots",
    "trainwell.track.tensorboard",
    "trainwell.track.xunit",
    "trainwell.track.axes",
    "trainwell.track.compare",
    "trainwell.track.html",
)


def _loaded_after_import(module: str) -> list[str]:
    code = (
        f"import json, sys, {module}\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout)


@pytest.mark.parametrize("module", LIGHT_MODULES)
def test_import_is_light(module: str) -> None:
    # plots/tensorboard/meta import their heavy dependency inside functions only.
    assert _loaded_after_import(module) == []


def test_check_detects_heavy_import() -> None:
    # Guard against a vacuous test: the probe must see torch when it *is* imported.
    assert _loaded_after_import("torch") == ["torch"]
