"""Classification metrics from true and predicted label indices, as scikit-learn reports them.

numpy only (the runtime installs no scikit-learn). Precision of a class never predicted, and
recall of a class with no images, are undefined: they are None here, not a silent 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ClassMetrics:
    """One class: precision, recall and F1 (None when undefined), and how many images."""

    label: str
    precision: float | None
    recall: float | None
    f1: float | None
    support: int  # images whose true class this is
    predicted: int  # images predicted as this class


def confusion_matrix(truths: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """int64 `[classes, classes]`: row = true class, column = predicted class."""
    matrix = np.zeros((classes, classes), np.int64)
    np.add.at(matrix, (truths, predictions), 1)
    return matrix


def per_class(matrix: np.ndarray, labels: Sequence[str]) -> list[ClassMetrics]:
    """Precision, recall and F1 of each class of a confusion matrix."""
    out = []
    for i, label in enumerate(labels):
        hits, support, predicted = int(matrix[i, i]), int(matrix[i].sum()), int(matrix[:, i].sum())
        precision = hits / predicted if predicted else None
        recall = hits / support if support else None
        f1 = None
        if precision is not None and recall is not None:
            both = precision + recall
            f1 = 2 * precision * recall / both if both else 0.0
        out.append(ClassMetrics(label, precision, recall, f1, support, predicted))
    return out


def macro(metrics: Sequence[ClassMetrics], field: str) -> float | None:
    """Unweighted mean of `field` over the classes that have images (support > 0)."""
    values = [getattr(m, field) for m in metrics if m.support]
    values = [0.0 if v is None else v for v in values]  # a present class never predicted: 0
    return float(np.mean(values)) if values else None
