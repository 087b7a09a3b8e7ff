"""What export reads from a run directory: names, labels, and the held-out pixels train saved."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ssl import contract
from edge_ssl.errors import RunDirError
from edge_ssl.rundir import resolve_run

_TRAIN_HINT = "`edge-ssl train` writes it"


@dataclass(frozen=True)
class RunSource:
    """One run directory, checked complete before anything slow starts.

    Arrays are uint8 `[N, S, S, 3]` at the training size S; labels are int64 `[N]`.
    """

    path: Path
    name: str
    labels: list[str]
    image_size: int
    classifier_images: np.ndarray
    classifier_labels: np.ndarray
    pretext_images: np.ndarray
    calibration_images: np.ndarray
    gate_images: np.ndarray  # labelled training images for the INT8/FP16 decisions
    gate_labels: np.ndarray

    def model_path(self, file_name: str) -> Path:
        return self.path / file_name


def open_run(run_dir: Path) -> RunSource:
    """Read config.json and heldout.npz of `run_dir` (`runs/latest` followed), and check that
    both model files are there.

    Raises:
        RunDirError: naming the missing directory, file or key and the command that makes it.
    """
    run_dir = resolve_run(run_dir)
    for file_name in (contract.CONFIG_FILE, contract.PRETEXT_MODEL, contract.CLASSIFIER_MODEL,
                      contract.HELDOUT_FILE):
        if not (run_dir / file_name).is_file():
            raise RunDirError(
                f"{run_dir / file_name} is missing; {_TRAIN_HINT} (an interrupted run "
                f"continues with `edge-ssl train --resume {run_dir}`)."
            )
    config = _read_config(run_dir / contract.CONFIG_FILE)
    arrays = _read_heldout(run_dir / contract.HELDOUT_FILE)
    source = RunSource(
        path=run_dir,
        name=str(config.get(contract.CONFIG_NAME) or run_dir.name),
        labels=[str(label) for label in config[contract.CONFIG_LABELS]],
        image_size=int(config[contract.CONFIG_IMAGE_SIZE]),
        classifier_images=arrays[contract.HELDOUT_CLASSIFIER_IMAGES],
        classifier_labels=arrays[contract.HELDOUT_CLASSIFIER_LABELS].astype(np.int64),
        pretext_images=arrays[contract.HELDOUT_PRETEXT_IMAGES],
        calibration_images=arrays[contract.HELDOUT_CALIBRATION_IMAGES],
        gate_images=arrays[contract.HELDOUT_GATE_IMAGES],
        gate_labels=arrays[contract.HELDOUT_GATE_LABELS].astype(np.int64),
    )
    _check_shapes(source, run_dir / contract.HELDOUT_FILE)
    return source


def _read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RunDirError(f"{path}: unreadable ({exc}); {_TRAIN_HINT}.") from None
    if not isinstance(config, dict):
        raise RunDirError(f"{path}: expected a JSON object; {_TRAIN_HINT}.")
    for key in (contract.CONFIG_LABELS, contract.CONFIG_IMAGE_SIZE):
        if key not in config:
            raise RunDirError(f"{path}: has no {key!r}; {_TRAIN_HINT}.")
    if not isinstance(config[contract.CONFIG_LABELS], list) or not config[contract.CONFIG_LABELS]:
        raise RunDirError(f"{path}: {contract.CONFIG_LABELS!r} must be a non-empty list.")
    return config


def _read_heldout(path: Path) -> dict[str, np.ndarray]:
    keys = (contract.HELDOUT_CLASSIFIER_IMAGES, contract.HELDOUT_CLASSIFIER_LABELS,
            contract.HELDOUT_PRETEXT_IMAGES, contract.HELDOUT_CALIBRATION_IMAGES,
            contract.HELDOUT_GATE_IMAGES, contract.HELDOUT_GATE_LABELS)
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [key for key in keys if key not in data.files]
            if missing:
                raise RunDirError(f"{path}: has no {', '.join(missing)}; {_TRAIN_HINT}.")
            return {key: data[key] for key in keys}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RunDirError(f"{path}: unreadable ({exc}); {_TRAIN_HINT}.") from None


def _check_shapes(source: RunSource, path: Path) -> None:
    size = source.image_size
    for key, images in ((contract.HELDOUT_CLASSIFIER_IMAGES, source.classifier_images),
                        (contract.HELDOUT_PRETEXT_IMAGES, source.pretext_images),
                        (contract.HELDOUT_CALIBRATION_IMAGES, source.calibration_images),
                        (contract.HELDOUT_GATE_IMAGES, source.gate_images)):
        if images.dtype != np.uint8 or images.shape[1:] != (size, size, 3) or not len(images):
            raise RunDirError(
                f"{path}: {key} is {images.dtype} {list(images.shape)}, expected a non-empty "
                f"uint8 [N, {size}, {size}, 3]; {_TRAIN_HINT}."
            )
    for key, labels, images in (
            (contract.HELDOUT_CLASSIFIER_LABELS, source.classifier_labels,
             source.classifier_images),
            (contract.HELDOUT_GATE_LABELS, source.gate_labels, source.gate_images)):
        if labels.shape != (len(images),) or labels.min() < 0 \
                or labels.max() >= len(source.labels):
            raise RunDirError(
                f"{path}: {key} must hold one index in 0..{len(source.labels) - 1} per image; "
                f"{_TRAIN_HINT}."
            )
