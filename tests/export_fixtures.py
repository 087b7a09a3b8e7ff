"""A tiny run directory as `edge-ssl train` writes it, built in seconds for the export tests.

MobileNetV2 width 0.35 at 32×32, untrained. A freshly initialised MobileNetV2 in inference mode
maps every image to the same probabilities (its BatchNorm statistics are 0/1 while the real
activations shrink layer by layer to ~1e-11), which would make parity trivially true; so the
BatchNorm statistics are set from one batch, which gives varied, image-dependent probabilities.
Training for real (even a few steps) costs a minute of graph tracing on two cores.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import keras
import numpy as np

from edge_ssl import contract
from edge_ssl.train.cuts import DEFAULT_CUT
from edge_ssl.train.model import ModelSpec, build_classifier, build_model

SIZE = 32
LABELS = ["dark", "bright"]
RUN_NAME = "tiny-run"


def images(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """uint8 `[n, SIZE, SIZE, 3]` noisy scenes lit from above, and labels (1 = bright)."""
    labels = rng.integers(0, 2, n)
    base = np.where(labels == 1, 165, 85)[:, None, None, None] + rng.normal(0, 25, (n, 1, 1, 3))
    pixels = (base + rng.normal(0, 30, (n, SIZE, SIZE, 3))
              + np.linspace(40, -40, SIZE)[None, :, None, None])
    return np.clip(pixels, 0, 255).astype(np.uint8), labels.astype(np.int64)


def _set_batchnorm_statistics(model: keras.Model, batch: np.ndarray) -> None:
    # momentum 0: one training-mode pass makes every moving statistic that batch's statistic.
    layers = [layer for layer in model.get_layer("backbone").layers
              if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [layer.momentum for layer in layers]
    for layer in layers:
        layer.momentum = 0.0
    model(batch, training=True)
    for layer, momentum in zip(layers, momenta, strict=True):
        layer.momentum = momentum


def write_run(run: Path, seed: int = 0) -> Path:
    """Write config.json, pretext.keras, classifier.keras and heldout.npz into `run`."""
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    spec = ModelSpec(image_size=SIZE, width=0.35)
    pretext = build_model(spec, len(contract.ROTATION_LABELS), "pretext")
    train_x, train_y = images(rng, 64)
    _set_batchnorm_statistics(pretext, train_x)
    classifier = build_classifier(pretext, DEFAULT_CUT, len(LABELS))
    run.mkdir(parents=True, exist_ok=True)
    pretext.save(run / contract.PRETEXT_MODEL)
    classifier.save(run / contract.CLASSIFIER_MODEL)
    val_x, val_y = images(rng, 40)
    heldout: dict[str, Any] = {
        contract.HELDOUT_CLASSIFIER_IMAGES: val_x,
        contract.HELDOUT_CLASSIFIER_LABELS: val_y,
        contract.HELDOUT_PRETEXT_IMAGES: images(rng, 10)[0],
        contract.HELDOUT_CALIBRATION_IMAGES: train_x[:32],
        contract.HELDOUT_GATE_IMAGES: train_x[32:],
        contract.HELDOUT_GATE_LABELS: train_y[32:],
    }
    np.savez(run / contract.HELDOUT_FILE, **heldout)
    config = {contract.CONFIG_NAME: RUN_NAME, contract.CONFIG_LABELS: LABELS,
              contract.CONFIG_IMAGE_SIZE: SIZE, contract.CONFIG_RESCALE: spec.rescale,
              "width": spec.width}
    (run / contract.CONFIG_FILE).write_text(json.dumps(config), encoding="utf-8")
    return run


def copy_run(source: Path, parent: Path) -> Path:
    """A copy of the run `source` inside `parent`, under the run's own name."""
    return Path(shutil.copytree(source, parent / RUN_NAME))
