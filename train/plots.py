"""The study's figures: pretext samples with their rotation labels, and training curves."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from edge_ssl.atomic import write_with
from edge_ssl.contract import ROTATION_LABELS


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def save_pretext_samples(images: np.ndarray, labels: np.ndarray, path: Path,
                         columns: int = 8) -> None:
    """A grid of augmented, rotated pretext samples titled with their labels (study Fig. 4)."""
    plt = _pyplot()
    count = min(len(images), 4 * columns)
    rows = max(1, int(np.ceil(count / columns)))
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.3, rows * 1.45), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i < count:
            ax.imshow(images[i])
            ax.set_title(f"{ROTATION_LABELS[int(labels[i])]}°", fontsize=8)
    fig.suptitle("Pretext samples: augmented, then rotated counter-clockwise", fontsize=9)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def read_history(path: Path) -> dict[str, list[float]]:
    if not path.exists():
        return {}
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {k: [float(r[k]) for r in rows] for k in (rows[0].keys() if rows else [])}


def save_curves(histories: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Accuracy and loss per epoch for each stage (study Figs. 6–8), train solid, val dashed."""
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    stages = [name for name, h in histories.items() if h]
    fig, axes = plt.subplots(2, max(1, len(stages)), figsize=(4.2 * max(1, len(stages)), 6.2),
                             squeeze=False)
    for col, name in enumerate(stages):
        h = histories[name]
        epochs = np.arange(1, len(h.get("loss", [])) + 1)
        for row, metric in enumerate(("accuracy", "loss")):
            ax = axes[row][col]
            ax.plot(epochs, h.get(metric, []), label=f"train {metric}")
            ax.plot(epochs, h.get(f"val_{metric}", []), "--", label=f"val {metric}")
            ax.set_title(f"{name}: {metric}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)
