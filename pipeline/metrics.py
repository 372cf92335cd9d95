"""Classification metrics shared by training and evaluation: accuracy, confusion matrix, per-class scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.fileio import atomic_path


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted classes (as TensorFlow's speech_commands prints it)."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(actual, int), np.asarray(predicted, int)), 1)
    return matrix


def accuracy(matrix: np.ndarray) -> float:
    """Top-1 accuracy from a confusion matrix."""
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else 0.0


def per_class(matrix: np.ndarray, labels: list[str]) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support per class; 0 where undefined."""
    tp = np.diag(matrix).astype(float)
    predicted, actual = matrix.sum(axis=0), matrix.sum(axis=1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return {
        label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]), "support": int(actual[i])}
        for i, label in enumerate(labels)
    }


def format_confusion(matrix: np.ndarray) -> str:
    """The matrix as bracketed rows of counts, like the seed's training log."""
    width = max(len(str(int(matrix.max()))), 1) + 1
    return "\n".join("[" + "".join(f"{int(v):>{width}}" for v in row) + "]" for row in matrix)


def plot_confusion(matrix: np.ndarray, labels: list[str], out_png: Path, title: str) -> None:
    """A heat map with class names on both axes and the count in every cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    size = 1.0 + 0.55 * len(labels)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(f"{title} (accuracy {accuracy(matrix):.1%}, N={int(matrix.sum())})")
    threshold = matrix.max() / 2 if matrix.size else 0
    for (i, j), value in np.ndenumerate(matrix):
        if value:
            ax.text(j, i, str(int(value)), ha="center", va="center", fontsize=8,
                    color="white" if value > threshold else "black")  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    fig.tight_layout()
    with atomic_path(out_png, ".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
