"""Figures for supervised runs: confusion matrix and a grid of misclassified images."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def confusion_png(matrix: np.ndarray, classes: list[str], path: Path) -> Path:
    n = len(classes)
    fig = _figure(max(4.0, 0.5 * n + 2), max(3.5, 0.5 * n + 1.5))
    ax = fig.add_subplot()
    im = ax.imshow(matrix, cmap="Blues")
    fig.colorbar(im, ax=ax).set_label("test samples")
    ax.set_xticks(range(n), classes, rotation=45 if n > 10 else 0)
    ax.set_yticks(range(n), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"confusion matrix (accuracy {np.trace(matrix) / max(matrix.sum(), 1):.2%})")
    if n <= 20:
        top = matrix.max() or 1
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8,
                            color="white" if matrix[i, j] > top / 2 else "black")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path


def misclassified_png(images: np.ndarray, truth: np.ndarray, pred: np.ndarray, classes: list[str],
                      path: Path, limit: int = 40) -> Path:
    """images: (N, C, H, W) as the model saw them (any scale)."""
    n = min(limit, len(images))
    cols = min(10, n)
    rows = (n + cols - 1) // cols
    fig = _figure(1.2 * cols, 1.4 * rows + 0.4)
    fig.suptitle(f"misclassified test images ({len(images)} in all): true -> predicted")
    for k in range(n):
        ax = fig.add_subplot(rows, cols, k + 1)
        img = images[k]
        img = img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)
        lo, hi = float(img.min()), float(img.max())
        ax.imshow((img - lo) / (hi - lo + 1e-9), cmap="gray_r" if img.ndim == 2 else None)
        ax.set_title(f"{classes[truth[k]]}->{classes[pred[k]]}", fontsize=8, color="crimson")
        ax.axis("off")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    return path
