"""Data options federated silos need: a fixed class list, and stdlib text restricted to some packages."""

from __future__ import annotations

import pytest

from trainwell.config import load_config
from trainwell.errors import DataError


def table(path, labels):
    path.write_text("x,label\n" + "".join(f"{i},{lab}\n" for i, lab in enumerate(labels)))
    return str(path)


def test_fixed_classes_keep_label_ids_in_a_silo_that_lacks_some(tmp_path):
    from trainwell.data.arrays import load_arrays

    path = table(tmp_path / "silo.csv", ["cat", "dog"] * 10)  # no 'bird' here
    cfg = load_config("diabetes_mlp", ["data.name=table", f"data.path={path}", "data.task=classify",
                                       "data.classes=['bird', 'cat', 'dog']"]).data
    ds = load_arrays(cfg)
    assert ds.classes == ["bird", "cat", "dog"] and set(ds.y_train.tolist()) == {1, 2}
    cfg.classes = ["cat"]
    with pytest.raises(DataError, match="holds class 'dog'"):
        load_arrays(cfg)


def test_stdlib_packages_and_exclusions():
    from trainwell.data.text import read_stdlib

    train, val, info = read_stdlib(0.05, ["email"])
    everything_else, _, _ = read_stdlib(0.05, exclude=["email"])
    assert "email" in train and info["packages"] == ["email"]
    assert len(train) + len(val) < len(everything_else)
    with pytest.raises(DataError, match="'emial' is not a top-level package"):
        read_stdlib(0.05, ["emial"])
