"""The transfer tests' target text and fine-tuning settings (the tiny pretrained checkpoint they start
from is tests/conftest.py's `pretrained`, shared with the preference tests)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def target_text(tmp_path_factory) -> Path:
    """Target-domain text unlike the pretraining code: English prose (this repository's README)."""
    text = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    path = tmp_path_factory.mktemp("target") / "prose.txt"
    path.write_text(text * 2, encoding="utf-8")
    return path


@pytest.fixture
def finetune(tiny_session, target_text, pretrained):
    """--set values for a tiny fine-tuning run of the pretrained checkpoint on the target text."""
    def sets(**extra: object) -> list[str]:
        return tiny_session(data__path=str(target_text), train__init_from=str(pretrained),
                         eval__samples=0, log__plots=False, log__tensorboard=False, **extra)
    return sets
