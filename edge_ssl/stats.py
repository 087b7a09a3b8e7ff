"""Small statistics every stage reports with: a proportion's 95 % interval, a stratified sample.

numpy only, so that the runtime (`edge-ssl evaluate`) and export share one definition.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

Z_95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson_interval(successes: int, n: int, z: float = Z_95) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion, as fractions in [0, 1].

    Wilson rather than the normal approximation: it stays inside [0, 1] and is honest at 0 %,
    100 % and small n, which is where accuracies of small held-out sets live.
    """
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    # The bound at 0 % or 100 % is exact; the formula would leave a rounding error there.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return low, high


@dataclass(frozen=True)
class Rate:
    """`hits` of `n`, e.g. correct predictions: how edge-ssl reports every accuracy or agreement."""

    hits: int
    n: int

    @property
    def percent(self) -> float:
        return 100.0 * self.hits / self.n if self.n else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        """The 95 % Wilson interval, in percent."""
        low, high = wilson_interval(self.hits, self.n)
        return 100.0 * low, 100.0 * high

    @classmethod
    def of(cls, mask: np.ndarray) -> Rate:
        """The share of True in a boolean array."""
        return cls(int(np.count_nonzero(mask)), int(np.size(mask)))

    def __str__(self) -> str:
        low, high = self.ci95
        return f"{self.percent:.1f}% (95% CI {low:.1f}–{high:.1f}, n={self.n:,})"

    def to_json(self) -> dict[str, Any]:
        return {"percent": self.percent, "hits": self.hits, "n": self.n, "ci95": list(self.ci95)}


def stratified_sample(labels: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Indices (sorted) of `min(n, len(labels))` items, each class in proportion to its size.

    Within each class the order is a seeded permutation; item i of a class of size m gets the key
    (i + u) / m with one random offset u per class, and the n smallest keys are taken, so every
    class is represented in proportion (to within one item) whatever the file order.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    keys = np.empty(len(labels))
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        keys[members] = (np.arange(len(members)) + rng.random()) / len(members)
    return np.sort(np.argsort(keys, kind="stable")[:n])


def paired_bootstrap(differences: np.ndarray, rounds: int = 2000, seed: int = 0
                     ) -> tuple[float, float]:
    """95 % percentile interval of the mean of `differences` `[seeds, images]` (one method's
    per-image correctness minus another's, on the same labels and test images).

    Seeds and test images are resampled together, each with replacement, so the interval holds
    both the training noise (seeds) and the test sample's; pairing removes what the two methods
    share (the same images are easy or hard for both). Its width is honest for a few seeds and a
    hundred images, where pooling seeds × images as independent trials is not.
    """
    return paired_bootstrap_mean([differences], rounds, seed)


def paired_bootstrap_mean(groups: Sequence[np.ndarray], rounds: int = 2000, seed: int = 0
                          ) -> tuple[float, float]:
    """95 % percentile interval of the mean over `groups` (e.g. pairs of classes) of each
    group's mean difference `[seeds, images]`: every round resamples each group's seeds and
    images as `paired_bootstrap` does, and averages the groups. The interval is about these
    groups, weighted equally; it says nothing of pairs that were not measured."""
    matrices = [np.asarray(d, dtype=np.float64) for d in groups]
    rng = np.random.default_rng(seed)
    means = np.empty(rounds)
    for r in range(rounds):
        total = 0.0
        for differences in matrices:
            seeds, images = differences.shape
            rows = rng.integers(0, seeds, seeds)
            columns = rng.integers(0, images, images)
            total += differences[np.ix_(rows, columns)].mean()
        means[r] = total / len(matrices)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)
