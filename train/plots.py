"""The study's figures: pretext samples with their rotation labels, and training curves."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from edge_ssl.atomic import write_with
from edge_ssl.contract import ROTATION_LABELS

KNN_COLUMN = "knn_accuracy"  # written by edge_ssl.train.monitor


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def save_pretext_samples(images: np.ndarray, labels: np.ndarray, path: Path,
                         columns: int = 8) -> None:
    """A grid of augmented, rotated pretext samples titled with their rotation labels."""
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
    # Keras' CSVLogger writes "NA" val_* columns for a fit without validation data: dropped.
    columns = {k: [float(r[k]) if r[k] != "NA" else float("nan") for r in rows]
               for k in (rows[0].keys() if rows else [])}
    return {k: v for k, v in columns.items() if not all(np.isnan(v))}


def save_curves(histories: dict[str, dict[str, list[float]]], path: Path) -> None:
    """Accuracy and loss per epoch for each stage: training solid, held-out or selection split
    dashed, and the pretext's kNN monitor dotted."""
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
            if f"val_{metric}" in h:
                ax.plot(epochs, h[f"val_{metric}"], "--",
                        label=f"{'held-out' if name == 'pretext' else 'selection'} {metric}")
            if metric == "accuracy" and KNN_COLUMN in h:
                ax.plot(epochs, h[KNN_COLUMN], ":", label="kNN on labelled features")
            if metric == "loss" and "rotation_loss" in h:  # a fine-tune with the rotation loss
                ax.plot(epochs, h["rotation_loss"], "-.", label="train rotation loss")
            ax.set_title(f"{name}: {metric}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def save_methods(results: dict[str, dict[str, Any]], titles: dict[str, str], test_set: str,
                 path: Path) -> None:
    """Test accuracy of each method with its 95 % interval, one bar each."""
    plt = _pyplot()
    names = [m for m in titles if m in results]
    accuracy = np.array([results[m]["test"]["percent"] for m in names])
    low = np.array([results[m]["test"]["ci95"][0] for m in names])
    high = np.array([results[m]["test"]["ci95"][1] for m in names])
    n = results[names[0]]["test"]["n"] if names else 0
    fig, ax = plt.subplots(figsize=(6.4, 3.2))
    colours = ["#bbbbbb" if results[m].get("collapsed") else "#4c72b0" for m in names]
    ax.barh(range(len(names)), accuracy, xerr=[accuracy - low, high - accuracy],
            color=colours, capsize=3)
    ax.set_yticks(range(len(names)), [titles[m] for m in names])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("test accuracy %, 95 % Wilson interval", fontsize=8)
    ax.set_title(f"n = {n} test images: {test_set}", fontsize=9)  # too long for the x label
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def save_label_efficiency(summary: dict[str, dict[str, dict[str, Any]]], titles: dict[str, str],
                          subtitle: str, path: Path,
                          margins: dict[str, dict[str, Any]] | None = None) -> None:
    """Mean test accuracy against labels per class (log x), one line per method, error bars of
    one standard deviation over seeds. With a single budget a line has one point, so the
    methods stand side by side instead, with their intervals, beside the SSL methods' margins
    over the best baseline with their paired intervals."""
    plt = _pyplot()
    budgets = list(next(iter(summary.values())).keys()) if summary else []
    if len(budgets) == 1:
        _methods_side_by_side(plt, summary, margins or {}, budgets[0], titles, subtitle, path)
        return
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for method, rows in summary.items():
        points = sorted((r["labels_per_class"], r["mean"], r["std"] or 0.0)
                        for r in rows.values() if r["mean"] is not None)
        if not points:
            continue
        x, mean, std = (np.array(v, dtype=float) for v in zip(*points, strict=True))
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=3, label=titles.get(method, method))
    ax.set_xscale("log")
    ax.set_xlabel("labelled images per class")
    ax.set_ylabel("test accuracy % (mean ± s.d. over seeds)")
    ax.set_title(subtitle, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def _methods_side_by_side(plt: Any, summary: dict[str, Any], margins: dict[str, Any],
                          budget: str, titles: dict[str, str], subtitle: str,
                          path: Path) -> None:
    rows = [(m, r[budget]) for m, r in summary.items() if r[budget]["mean"] is not None]
    shifts = [(m, r[budget]) for m, r in margins.items() if budget in r and "ci95" in r[budget]]
    fig, axes = plt.subplots(1, 2, figsize=(10.5, 0.45 * max(len(rows), 4) + 1.6),
                             squeeze=False)
    left, right = axes[0]
    for y, (_, row) in enumerate(reversed(rows)):
        _interval(left, y, row["mean"], *row["pooled"]["ci95"], fmt="o", color="tab:blue")
    left.set_yticks(range(len(rows)), [titles.get(m, m) for m, _ in reversed(rows)], fontsize=8)
    left.set_xlabel("test accuracy %, mean over seeds (pooled 95 % interval)")
    left.set_title(f"{subtitle}, {budget} labels per class", fontsize=9)
    colours = {"above": "tab:green", "below": "tab:red"}
    for y, (_, row) in enumerate(reversed(shifts)):
        _interval(right, y, row["points"], *row["ci95"], fmt="s",
                  color=colours.get(row["verdict"], "tab:gray"))
    right.set_yticks(range(len(shifts)), [titles.get(m, m) for m, _ in reversed(shifts)],
                     fontsize=8)
    right.axvline(0, color="black", linewidth=0.8)
    right.set_xlabel("points above the best baseline (paired 95 % interval)")
    right.set_title("margin over the best baseline", fontsize=9)
    for ax in (left, right):
        ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def save_pair_margins(summary: dict[str, Any], titles: dict[str, str], path: Path) -> None:
    """Per SSL method and budget: each pair's margin over its best label-only baseline and the
    mean over the pairs (diamond), each with its paired 95 % interval."""
    plt = _pyplot()
    lines: list[tuple[str, float, float, float, bool]] = []  # label, points, low, high, mean
    several = len(summary["margins"]) > 1
    for method, rows in summary["margins"].items():
        for budget, row in rows.items():
            for pair in row["pairs"]:
                label = f"{titles.get(method, method)}: {pair['pair']}" if several else pair["pair"]
                lines.append((label, pair["points"], *pair["ci95"], False))
            lines.append((f"{titles.get(method, method)}, {budget} labels/class: mean",
                          row["mean_points"], *row["ci95"], True))
    fig, ax = plt.subplots(figsize=(8.4, 0.36 * len(lines) + 1.4))
    for y, (_, points, low, high, mean) in enumerate(reversed(lines)):
        _interval(ax, y, points, low, high, fmt="D" if mean else "o",
                  color="black" if mean else "tab:blue", markersize=7 if mean else 5)
    ax.set_yticks(range(len(lines)), [label for label, *_ in reversed(lines)], fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.set_xlabel("points above the best label-only baseline (paired 95 % interval)")
    ax.set_title(f"{len(summary['pairs'])} pairs of classes", fontsize=9)
    ax.grid(alpha=0.3, axis="x")
    fig.tight_layout()
    write_with(path, lambda tmp: fig.savefig(tmp, dpi=110))
    plt.close(fig)


def _interval(ax: Any, y: float, point: float, low: float, high: float, **style: Any) -> None:
    """A point at height `y` with its interval [low, high] as horizontal error bars."""
    ax.errorbar(point, y, xerr=[[point - low], [high - point]], capsize=3, **style)
