"""Cheap measurements of what a backbone learned: pooled features, linear probes, kNN, colour.

These answer the sceptic's questions without training a network: does a frozen backbone separate
the classes (linear probe), did the pretext change that (the same probe on a random-init
backbone), and is a trivial colour feature already enough (the colour floor).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import keras
import numpy as np

from edge_ssl.train.model import BACKBONE_NAME, predict

COLOUR_BINS = 4  # per channel: 4 × 4 × 4 = 64 colour bins
TINY_SIDES = (8, 16)  # thumbnail sides the tiny-image probe chooses from (192 or 768 numbers)
PROBE_ALPHAS = np.logspace(-2, 4, 13)  # ridge strengths tried by leave-one-out on training data


def colour_histogram(pixels: np.ndarray, bins: int = COLOUR_BINS) -> np.ndarray:
    """uint8 `[N, H, W, 3]` → `[N, bins³]` normalised joint RGB histograms."""
    quantised = pixels.astype(np.int32) * bins // 256
    index = (quantised[..., 0] * bins + quantised[..., 1]) * bins + quantised[..., 2]
    counts = np.stack([np.bincount(i.ravel(), minlength=bins ** 3) for i in index])
    return (counts / counts.sum(axis=1, keepdims=True)).astype(np.float32)


def thumbnails(pixels: np.ndarray, side: int) -> np.ndarray:
    """uint8 `[N, H, W, 3]` → `[N, side·side·3]` pixels of box-filtered side×side thumbnails."""
    from PIL import Image

    return np.stack([np.asarray(Image.fromarray(image).resize((side, side), Image.Resampling.BOX))
                     for image in pixels]).reshape(len(pixels), -1).astype(np.float32)


def best_thumbnail_side(pixels: np.ndarray, labels: np.ndarray) -> int:
    """The side of TINY_SIDES whose thumbnails the ridge probe classifies best (the smaller
    on a tie, and when a class has a single image)."""
    return best_features({side: thumbnails(pixels, side) for side in TINY_SIDES}, labels)


def best_features(candidates: dict[Any, np.ndarray], labels: np.ndarray) -> Any:
    """The key of `candidates` (features of the same labelled images) that the ridge probe
    classifies best in a stratified 5-fold cross-validation on those images alone: how a probe
    picks its features without a selection split, and never on test images. The first key
    wins a tie, and is the answer when a class has a single image."""
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    keys = list(candidates)
    folds = min(5, int(np.bincount(labels).min()))
    if folds < 2 or len(keys) == 1:
        return keys[0]
    splits = StratifiedKFold(folds, shuffle=True, random_state=0)
    scores = [float(cross_val_score(_ridge(), candidates[key], labels, cv=splits).mean())
              for key in keys]
    return keys[int(np.argmax(scores))]


def _ridge() -> Any:
    """Standardised features, then a ridge classifier whose strength leave-one-out picks."""
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), RidgeClassifierCV(alphas=PROBE_ALPHAS))


def feature_extractor(model: keras.Model, layer: str | Sequence[str]) -> keras.Model:
    """uint8 images → global-average-pooled output of backbone layer `layer`, `[N, D]` (of
    several layers: their pooled outputs side by side, in one pass through the network).

    Shares the model's weights, so it follows them as training changes them; called in
    inference mode, so BatchNorm uses its moving statistics as the exported model will.
    """
    backbone = model.get_layer(BACKBONE_NAME)
    pooled = [keras.layers.GlobalAveragePooling2D()(backbone.get_layer(name).output)
              for name in ([layer] if isinstance(layer, str) else layer)]
    cut = keras.Model(backbone.input,
                      pooled[0] if len(pooled) == 1 else keras.layers.Concatenate()(pooled))
    images = keras.Input(shape=(None, None, 3), dtype="uint8")
    return keras.Model(images, cut(model.get_layer("preprocess")(images)))


def pooled_features(model: keras.Model, layers: Sequence[str], pixels: np.ndarray
                    ) -> dict[str, np.ndarray]:
    """Global-average-pooled outputs of several backbone layers for uint8 images, in one pass
    through the network, `{layer: float32 [N, D]}`."""
    backbone = model.get_layer(BACKBONE_NAME)
    widths = [int(backbone.get_layer(layer).output.shape[-1]) for layer in layers]
    features = extract(feature_extractor(model, layers), pixels)
    return dict(zip(layers, np.split(features, np.cumsum(widths)[:-1], axis=1), strict=True))


def extract(extractor: keras.Model, pixels: np.ndarray) -> np.ndarray:
    """Features of uint8 `[N, S, S, 3]` images in inference mode, `float32 [N, D]`."""
    return predict(extractor, pixels).astype(np.float32)


def linear_probe(train_x: np.ndarray, train_y: np.ndarray, test_x: np.ndarray) -> np.ndarray:
    """Predicted classes of `test_x` from a ridge classifier fitted on standardised `train_x`.

    The ridge strength is picked by leave-one-out on the training features alone, so the test
    images never influence the probe. scikit-learn's closed form takes well under a second.
    """
    if len(np.unique(train_y)) < 2:
        raise ValueError("a linear probe needs labelled images of at least two classes")
    return np.asarray(_ridge().fit(train_x, train_y).predict(test_x))


def knn_predict(train_x: np.ndarray, train_y: np.ndarray, query_x: np.ndarray,
                k: int = 20, leave_one_out: bool = False) -> np.ndarray:
    """Cosine kNN vote (similarity-weighted, as lightly and solo-learn monitor SSL runs).

    With `leave_one_out`, `query_x` is `train_x` and each image's own match is excluded.
    """
    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    similarity = unit(query_x) @ unit(train_x).T  # [Q, T]
    if leave_one_out:
        np.fill_diagonal(similarity, -np.inf)
    k = min(k, len(train_x) - int(leave_one_out))
    nearest = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
    classes = int(train_y.max()) + 1
    votes = np.zeros((len(query_x), classes))
    for row, (idx, sims) in enumerate(zip(nearest, np.take_along_axis(similarity, nearest, 1),
                                          strict=True)):
        np.add.at(votes[row], train_y[idx], np.clip(sims, 0.0, None) + 1e-6)
    return votes.argmax(axis=1)
