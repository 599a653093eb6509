"""Supervised recipes and user data (image folders, CSV/Parquet tables), tiny on CPU."""

from __future__ import annotations

import json

import numpy as np
import pytest

import trainwell
from trainwell.config import load_config
from trainwell.data.arrays import load_arrays
from trainwell.errors import DataError

QUICK = ["log.progress=off", "log.tensorboard=false", "eval.every=0", "train.threads=1"]


def train(tmp_path, recipe, *sets, name="run"):
    return trainwell.train(recipe, [*QUICK, *sets], run_dir=tmp_path / name)


def test_digits_cnn_tiny(tmp_path):
    res = train(tmp_path, "digits_cnn", "train.epochs=2", "checkpoint.every=10")
    s = res.summary
    assert 0.5 < s["test_accuracy"] <= 1 and s["baseline_svc_accuracy"] > 0.95
    assert s["test_accuracy"] == pytest.approx(s["val_accuracy"], abs=1e-3)
    assert (res.run_dir / "plots" / "confusion.png").stat().st_size > 5000
    if s["test_errors"]:
        assert (res.run_dir / "plots" / "misclassified.png").is_file()
    assert s["data"]["train"] == 1437 and s["data"]["test"] == 360


def test_split_is_fixed_and_stratified():
    cfg = load_config("digits_cnn").data
    a, b = load_arrays(cfg), load_arrays(cfg)
    assert np.array_equal(a.y_test, b.y_test) and a.info["test_indices_sha"] == b.info["test_indices_sha"]
    share = np.bincount(a.y_test) / len(a.y_test)
    assert np.allclose(share, np.bincount(a.y_train) / len(a.y_train), atol=0.01)


def test_diabetes_mlp_tiny(tmp_path):
    s = train(tmp_path, "diabetes_mlp", "train.epochs=3").summary
    assert "val_r2" in s and "baseline_linear_r2" in s and "val_rmse" in s
    assert 0.2 < s["baseline_linear_r2"] < 0.5


def save_pngs(root, per_class=6):
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for label in (0, 1, 7):
        folder = root / f"class_{label}"
        folder.mkdir(parents=True)
        for i, img in enumerate(d.images[d.target == label][:per_class]):
            Image.fromarray((img * 15).astype(np.uint8)).save(folder / f"{i}.png")
    return root


def test_image_folder(tmp_path):
    root = save_pngs(tmp_path / "imgs")
    res = train(tmp_path, "digits_cnn", "data.name=image_folder", f"data.path={root}", "data.image_size=16",
                "train.epochs=2", "train.batch_size=4")
    assert res.summary["data"]["classes"] == 3 and res.summary["data"]["train"] + res.summary["data"]["test"] == 18


def test_image_folder_errors(tmp_path):
    root = save_pngs(tmp_path / "imgs")
    (root / "class_0" / "broken.png").write_bytes(b"not an image")
    cfg = load_config("digits_cnn", ["data.name=image_folder", f"data.path={root}"]).data
    with pytest.raises(DataError, match="broken.png"):
        load_arrays(cfg)
    only = tmp_path / "one"
    (only / "a").mkdir(parents=True)
    from PIL import Image

    for i in range(12):
        Image.new("L", (8, 8), color=i).save(only / "a" / f"{i}.png")
    with pytest.raises(DataError, match="only one class"):
        load_arrays(load_config("digits_cnn", ["data.name=image_folder", f"data.path={only}"]).data)
    with pytest.raises(DataError, match="no class sub-folders"):
        load_arrays(load_config("digits_cnn", ["data.name=image_folder", f"data.path={tmp_path / 'one' / 'a'}"]).data)


def write_table(path, fmt="csv", nan_row=None, one_class=False, regress=False):
    from sklearn.datasets import load_diabetes, load_iris

    d = load_diabetes() if regress else load_iris()
    cols = {f"f{i}": d.data[:, i].copy() for i in range(d.data.shape[1])}
    if nan_row is not None:
        cols["f1"][nan_row] = np.nan
    label = d.target.astype(float) if regress else np.array([d.target_names[t] for t in d.target])
    if one_class:
        label[:] = "setosa"
    import pyarrow as pa

    table = pa.table({**cols, "species": label})
    if fmt == "csv":
        import pyarrow.csv as pcsv

        pcsv.write_csv(table, path)
    else:
        import pyarrow.parquet as pq

        pq.write_table(table, path)
    return path


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_table_classification(tmp_path, fmt):
    path = write_table(tmp_path / f"iris.{fmt}", fmt)
    s = train(tmp_path, "diabetes_mlp", "data.name=table", f"data.path={path}", "data.label=species",
              "objective.name=classify", "train.epochs=20", "optim.weight_decay=0.01").summary
    assert s["data"]["classes"] == 3 and s["test_accuracy"] > 0.6 and "baseline_svc_accuracy" in s


def test_table_regression(tmp_path):
    path = write_table(tmp_path / "diab.csv", regress=True)
    s = train(tmp_path, "diabetes_mlp", "data.name=table", f"data.path={path}", "data.label=species",
              "train.epochs=3").summary
    assert "val_r2" in s and s["baseline_linear_r2"] == pytest.approx(0.3322, abs=1e-3)


def test_table_errors(tmp_path):
    def cfg(path, label="species"):
        return load_config("diabetes_mlp", ["data.name=table", f"data.path={path}", f"data.label={label}"]).data

    good = write_table(tmp_path / "iris.csv")
    with pytest.raises(DataError, match="no label column 'specie'.*did you mean 'species'"):
        load_arrays(cfg(good, "specie"))
    with pytest.raises(DataError, match="column 'f1'.*data row 8"):
        load_arrays(cfg(write_table(tmp_path / "nan.csv", nan_row=7)))
    with pytest.raises(DataError, match="only one class"):
        load_arrays(cfg(write_table(tmp_path / "one.csv", one_class=True)))
    with pytest.raises(DataError, match="does not exist"):
        load_arrays(cfg(tmp_path / "missing.csv"))
    text = tmp_path / "words.csv"
    text.write_text("a,species\nx,1\ny,2\n")
    with pytest.raises(DataError, match="'a' is .*not numeric"):
        load_arrays(cfg(text))


def test_objective_must_fit_task(tmp_path):
    from trainwell.errors import ConfigError

    with pytest.raises(ConfigError, match="set objective.name = 'regress'"):
        train(tmp_path, "diabetes_mlp", "objective.name=classify")
    with pytest.raises(ConfigError, match="cnn' needs images"):
        train(tmp_path, "digits_cnn", "data.dataset=diabetes", "objective.name=regress")


def test_code_mlm_tiny_and_init_from(tmp_path, tiny):
    res = trainwell.train("code_mlm", tiny(train__steps=30, eval__every=15, eval__samples=0), run_dir=tmp_path / "mlm")
    s = res.summary
    assert 0 < s["unigram_val_accuracy"] < 1 and 0 <= s["val_accuracy"] <= 1
    lines = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert any("val/accuracy" in r for r in lines)
    # a downstream run starts from the encoder's weights (matching names and shapes)
    enc = res.run_dir / "checkpoints" / "step-30"
    down = trainwell.train("default", tiny(train__steps=2, train__init_from=str(enc)), run_dir=tmp_path / "down")
    assert down.summary["steps"] == 2
    from safetensors.torch import load_file

    before = load_file(enc / "model.safetensors")
    # the causal LM trained 2 steps from the encoder's weights: close to them, not a fresh init
    after = load_file(down.run_dir / "checkpoints" / "step-2" / "model.safetensors")
    key = "blocks.0.attn.qkv.weight"
    assert (after[key] - before[key]).abs().max() < 0.05
