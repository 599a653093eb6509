"""Supervised learning on in-memory samples (scikit-learn's bundled data, image folders, tables):
classification or regression, with a classical model trained on the same split in the same run.

The same data with an objective that ignores the labels (density, simclr) is unsupervised: those
Jobs are built by trainwell/paradigms/density.py and clustering.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from trainwell.config.schema import Config
from trainwell.data.arrays import ArrayDataset, load_arrays
from trainwell.data.samples import ArrayBatches, fixed_batches
from trainwell.engine.job import Job
from trainwell.errors import ConfigError
from trainwell.models.registry import build_model, is_import_path
from trainwell.objectives import classify_loss, regress_loss, resolve


def array_job(cfg: Config, device: torch.device) -> Job:
    """Supervised learning on in-memory samples: classification or regression."""
    if cfg.model.name == "hf" and not getattr(cfg.data, "text", ""):
        raise ConfigError("model.name = 'hf' needs a table with a text column (data.name = 'table', "
                          "data.text = COLUMN).")
    ds = load_arrays(cfg.data)
    unsupervised = without_labels(cfg.objective.name)
    if unsupervised is not None:
        return unsupervised(cfg, device, ds)
    wanted = "classify" if ds.task == "classify" else "regress"
    custom = is_import_path(cfg.objective.name)
    if cfg.objective.name != wanted and not custom:
        raise ConfigError(f"the data is a {ds.task} task but objective.name = '{cfg.objective.name}'; "
                          f"set objective.name = '{wanted}'.")
    text_baseline: dict[str, float] = {}
    if ds.is_text or cfg.model.name == "hf":
        ds, text_baseline = tokenize_texts(cfg, ds)
    out = len(ds.classes) if ds.task == "classify" else 1
    model = build_model(cfg.model, feature_shape=ds.feature_shape, out_features=out).to(device)
    source = ArrayBatches(ds.x_train, ds.y_train, batch_size=cfg.train.batch_size, seed=cfg.train.seed)
    evals = fixed_batches(ds.x_test, ds.y_test, 256)
    facts = {"parameters": sum(p.numel() for p in model.parameters()), "data": ds.info,
             **(baseline(ds) if ds.raw_train is not None else text_baseline)}
    if custom:  # the user's loss on (input, target) batches; test metrics are its own
        return Job(model=model, source=source, objective=resolve(cfg.objective), eval_batches=evals,
                   units="samples", batches_per_epoch=source.batches_per_epoch(), facts=facts)
    if ds.task == "classify":
        ls = cfg.objective.label_smoothing
        return Job(model=model, source=source, eval_batches=evals, units="samples",
                   objective=lambda m, b: classify_loss(m, b, label_smoothing=ls),
                   batches_per_epoch=source.batches_per_epoch(), facts=facts,
                   finish=lambda m, run_dir: finish_classify(m, ds, evals, run_dir, cfg.log.plots))
    return Job(model=model, source=source, objective=regress_loss, eval_batches=evals,
               units="samples", batches_per_epoch=source.batches_per_epoch(), facts=facts,
               eval_extras=lambda m: regress_extras(m, ds))


def tokenize_texts(cfg: Config, ds: Any) -> tuple[Any, dict[str, float]]:
    """Text samples -> (N, model.max_length) token ids with the Hugging Face model's own tokenizer;
    also the TF-IDF baseline on the raw texts."""
    from dataclasses import replace

    from trainwell.models.hf import load_tokenizer

    if not ds.is_text or cfg.model.name != "hf":
        raise ConfigError("text samples (data.text) need model.name = 'hf' (a Hugging Face model folder), and "
                          "model.name = 'hf' needs a table with a text column (data.name = 'table', data.text = ...).")
    tok = load_tokenizer(cfg.model.path)

    def ids(texts: np.ndarray) -> np.ndarray:
        enc = tok(list(texts), max_length=cfg.model.max_length, padding="max_length", truncation=True)
        return np.asarray(enc["input_ids"], dtype=np.int64)  # (N, max_length)

    return (replace(ds, x_train=ids(ds.x_train), x_test=ids(ds.x_test), raw_train=None, raw_test=None),
            tfidf_baseline(ds))


def without_labels(objective: str) -> Callable[..., Job] | None:
    """The builder of an unsupervised Job on the same samples, by objective name (or None)."""
    if objective == "density":
        from trainwell.paradigms.density import density_job

        return density_job
    if objective == "simclr":
        from trainwell.paradigms.clustering import simclr_job

        return simclr_job
    return None


def baseline(ds: ArrayDataset) -> dict[str, float]:
    """A classical model on the same split, trained in the same run, for honest comparison:
    an RBF SVM (``SVC()``) for classification, ``LinearRegression`` for regression."""
    if ds.task == "classify":
        from sklearn.svm import SVC

        acc = SVC().fit(ds.raw_train, ds.y_train).score(ds.raw_test, ds.y_test)
        return {"baseline_svc_accuracy": round(float(acc), 4)}
    from sklearn.linear_model import LinearRegression

    r2 = LinearRegression().fit(ds.raw_train, ds.y_train).score(ds.raw_test, ds.y_test)
    return {"baseline_linear_r2": round(float(r2), 4)}


def tfidf_baseline(ds: ArrayDataset) -> dict[str, float]:
    """For text samples: TF-IDF word and bigram features + logistic regression, same split."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    xtr, xte = vec.fit_transform(list(ds.x_train)), vec.transform(list(ds.x_test))
    acc = LogisticRegression(max_iter=2000).fit(xtr, ds.y_train).score(xte, ds.y_test)
    return {"baseline_tfidf_accuracy": round(float(acc), 4)}


def regress_extras(metrics: dict[str, float], ds: ArrayDataset) -> dict[str, float]:
    """R² and RMSE in the target's own units, from the (standardized) mean squared error."""
    mse = metrics["val/loss"]
    var = float(np.var(ds.y_test))
    return {"val/r2": 1.0 - mse / var, "val/rmse": float(np.sqrt(mse)) * ds.y_std}


@torch.no_grad()
def predict(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]]) -> np.ndarray:
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    preds = [model(b["input"].to(device)).argmax(dim=-1).cpu() for b in batches]
    model.train(was)
    return torch.cat(preds).numpy()


def finish_classify(model: torch.nn.Module, ds: ArrayDataset, batches: list[dict[str, torch.Tensor]],
                    run_dir: Path, draw: bool) -> dict[str, Any]:
    """Test accuracy and errors; with ``draw`` (log.plots) the confusion matrix and misclassified images."""
    pred = predict(model, batches)
    truth = ds.y_test
    wrong = np.flatnonzero(pred != truth)
    if draw:
        from trainwell.track.figures import confusion_png, misclassified_png

        matrix = np.zeros((len(ds.classes), len(ds.classes)), dtype=np.int64)
        np.add.at(matrix, (truth, pred), 1)
        plots = Path(run_dir) / "plots"
        confusion_png(matrix, ds.classes, plots / "confusion.png")
        if ds.is_image and len(wrong):
            misclassified_png(ds.x_test[wrong], truth[wrong], pred[wrong], ds.classes, plots / "misclassified.png")
    return {"test_accuracy": round(float((pred == truth).mean()), 4), "test_errors": int(len(wrong))}
