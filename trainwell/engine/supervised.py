"""Supervised-learning extras: same-run scikit-learn baselines, test metrics, figures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainwell.data.arrays import ArrayDataset


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
                    run_dir: Path) -> dict[str, Any]:
    from trainwell.track.figures import confusion_png, misclassified_png

    pred = predict(model, batches)
    truth = ds.y_test
    matrix = np.zeros((len(ds.classes), len(ds.classes)), dtype=np.int64)
    np.add.at(matrix, (truth, pred), 1)
    plots = Path(run_dir) / "plots"
    confusion_png(matrix, ds.classes, plots / "confusion.png")
    wrong = np.flatnonzero(pred != truth)
    if ds.is_image and len(wrong):
        misclassified_png(ds.x_test[wrong], truth[wrong], pred[wrong], ds.classes, plots / "misclassified.png")
    return {"test_accuracy": round(float((pred == truth).mean()), 4), "test_errors": int(len(wrong))}
