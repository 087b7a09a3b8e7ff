"""What a run directory holds besides its models: config.json, heldout.npz and report.json's rows.

config.json and heldout.npz are written once, when a run starts, so that `edge-ssl export` can
verify and calibrate from the run directory alone, even after the training data has moved.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import numpy as np

from edge_ssl import contract as C
from edge_ssl.atomic import write_json, write_with
from edge_ssl.images import INTERPOLATION
from edge_ssl.train import distribute, pipeline
from edge_ssl.train import method_names as names
from edge_ssl.train.config import RotationLoss, TrainConfig
from edge_ssl.train.environment import device_description, library_versions
from edge_ssl.train.model import model_spec
from edge_ssl.train.session import Session
from edge_ssl.train.sources import ImageSet, Source

CALIBRATION_IMAGES = 256  # training images kept in heldout.npz for INT8 calibration
GATE_IMAGES = 1000  # other training images on which export decides INT8/FP16 (never test images)
# Held-out pretext images decoded to validate the pretext and kept for export: enough for a
# ±1-point interval (8,000 rotated samples), and bounded however big the folder is.
MAX_HELDOUT_PRETEXT = 2000
BUILTIN_PARITY_IMAGES = 256  # of the run's own images, when its pretext ships without any
MODEL_FILES = {names.SSL_FINETUNE: C.CLASSIFIER_MODEL, names.SCRATCH: C.BASELINE_MODEL,
               names.SCRATCH_SHALLOW: C.BASELINE_SHALLOW_MODEL,
               names.S4L_FINETUNE: C.ROTATION_CLASSIFIER_MODEL,
               names.S4L_SCRATCH: C.ROTATION_BASELINE_MODEL}
HISTORY_FILES = {names.SSL_FINETUNE: C.HISTORY_FINETUNE, names.SCRATCH: C.HISTORY_BASELINE,
                 names.SCRATCH_SHALLOW: C.HISTORY_BASELINE_SHALLOW,
                 names.S4L_FINETUNE: C.HISTORY_FINETUNE_ROTATION,
                 names.S4L_SCRATCH: C.HISTORY_BASELINE_ROTATION}


def shipped_method(config: TrainConfig) -> str:
    """The fine-tune whose classifier a run ships (classifier.keras, what export converts)."""
    return names.S4L_FINETUNE if config.rotation_loss is RotationLoss.on else names.SSL_FINETUNE


def model_files(config: TrainConfig) -> tuple[dict[str, str], dict[str, str]]:
    """(model file, history file) of each network method of a run: the shipped fine-tune's
    are classifier.keras and history_finetune.csv, with or without the rotation loss."""
    if config.rotation_loss is not RotationLoss.on:
        return MODEL_FILES, HISTORY_FILES
    return ({**MODEL_FILES, names.S4L_FINETUNE: C.CLASSIFIER_MODEL,
             names.SSL_FINETUNE: C.PLAIN_CLASSIFIER_MODEL},
            {**HISTORY_FILES, names.S4L_FINETUNE: C.HISTORY_FINETUNE,
             names.SSL_FINETUNE: C.HISTORY_PLAIN_FINETUNE})


TEST_SETS = {"tiny-imagenet": "Tiny ImageNet val/ (the official validation images)",
             "folder": "the held-out 20 % of each class folder",
             "demo": "separately drawn demo scenes"}


def write_config(session: Session, source: Source, pretext_train: ImageSet | None) -> None:
    """config.json: every option (to resume with), and what export and the runtime read."""
    config, cluster = session.config, session.cluster
    spec = model_spec(config)
    scaling = distribute.Scaling(config.batch_size, cluster.replicas, config.learning_rate)
    steps = pipeline.steps_per_epoch(len(pretext_train) if pretext_train else 0,
                                     config.batch_size, config.rotations, cluster.replicas)
    write_json(session.run / C.CONFIG_FILE, {
        C.CONFIG_NAME: session.run.name,
        C.CONFIG_LABELS: list(source.labels),
        C.CONFIG_IMAGE_SIZE: config.image_size,
        C.CONFIG_RESCALE: spec.rescale,
        "interpolation": INTERPOLATION,
        "bn_momentum": spec.bn_momentum,
        "config": config.to_dict(),
        "versions": library_versions(),
        "device": device_description(),
        "mixed_precision": config.mixed_precision,
        "distribution": {
            **cluster.describe(),
            "pretext": {**scaling.to_json(steps), "steps_per_epoch": steps},
            "finetune": {"devices": 1, "batch": config.finetune_batch(config.batch_size),
                         "learning_rate": config.learning_rate,
                         "why": "labelled sets are small; every method trains alike"}},
    })


def write_heldout(session: Session, source: Source, heldout_px: np.ndarray | None,
                  test_px: np.ndarray, test_y: np.ndarray) -> None:
    """heldout.npz: what export needs to verify and calibrate without the data folder."""
    config = session.config
    earlier = config.pretext_from
    if heldout_px is None and earlier is not None and (earlier / C.HELDOUT_FILE).is_file():
        with np.load(earlier / C.HELDOUT_FILE) as saved:  # another run's pretext: its images
            heldout_px = saved[C.HELDOUT_PRETEXT_IMAGES]
    elif heldout_px is None:
        # The built-in pretext ships no images: export checks the rotation model on a sample
        # of this run's own unlabelled images instead.
        sample = source.pretext.take(np.random.default_rng(config.seed).permutation(
            len(source.pretext))[:BUILTIN_PARITY_IMAGES])
        heldout_px = session.decode(sample, "pretext parity")
    order = np.random.default_rng(config.seed).permutation(len(source.train))
    calibration_px = session.decode(source.train.take(order[:CALIBRATION_IMAGES]), "calibration")
    # With fewer training images than both need, the gate reuses calibration images: weaker
    # evidence, but still never the test images.
    gate = order[CALIBRATION_IMAGES:CALIBRATION_IMAGES + GATE_IMAGES]
    gate_px, gate_y = session.decode_labelled(source.train.take(gate if len(gate) else order),
                                              "gate")
    write_with(session.run / C.HELDOUT_FILE, lambda tmp: np.savez_compressed(tmp, **{
        C.HELDOUT_CLASSIFIER_IMAGES: test_px, C.HELDOUT_CLASSIFIER_LABELS: test_y,
        C.HELDOUT_GATE_IMAGES: gate_px, C.HELDOUT_GATE_LABELS: gate_y,
        C.HELDOUT_PRETEXT_IMAGES: heldout_px[:MAX_HELDOUT_PRETEXT],
        C.HELDOUT_CALIBRATION_IMAGES: calibration_px}))


def stage_json(stage: Any) -> dict[str, Any]:
    """A StageResult as report.json records it, floats rounded."""
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(stage).items()}
