"""A representation monitor for the pretext: are the features becoming useful for the classes?

Rotation accuracy alone cannot say whether the backbone's features separate the classes a user
cares about; lightly and solo-learn log a kNN accuracy of the features after each epoch for the
same reason. Here it is cosine kNN (k = 20), leave-one-out over the labelled training images —
never the test images — of the backbone's pooled features at the classifier's cut.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from edge_ssl.train import probe
from edge_ssl.train.plots import KNN_COLUMN

KNN_NEIGHBOURS = 20


class KnnMonitor(keras.callbacks.Callback):
    """Adds `knn_accuracy` to each epoch's logs (and so to the CSV log, which runs after it)."""

    def __init__(self, pixels: np.ndarray, labels: np.ndarray, layer: str,
                 k: int = KNN_NEIGHBOURS) -> None:
        super().__init__()
        self.pixels, self.labels, self.layer, self.k = pixels, labels, layer, k
        self._extractor: keras.Model | None = None

    def measure(self) -> float:
        if self._extractor is None:
            self._extractor = probe.feature_extractor(self.model, self.layer)
        features = probe.extract(self._extractor, self.pixels)
        predicted = probe.knn_predict(features, self.labels, features, self.k, leave_one_out=True)
        return float(np.mean(predicted == self.labels))

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if logs is not None:
            logs[KNN_COLUMN] = self.measure()
