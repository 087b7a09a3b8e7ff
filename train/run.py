"""`edge-ssl train` as a library call: both stages, every artifact of design §7, resumable.

A stage is complete once its .keras file exists (written atomically); `--resume` skips complete
stages and lets Keras' BackupAndRestore continue the interrupted one from its last epoch.
"""

from __future__ import annotations

import json
import platform
import sys
import time
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edge_ssl import __version__
from edge_ssl import contract as C
from edge_ssl.atomic import write_json, write_with
from edge_ssl.console import console
from edge_ssl.errors import TrainingError
from edge_ssl.images import INTERPOLATION
from edge_ssl.train import pipeline, plots
from edge_ssl.train.config import Freeze, TrainConfig
from edge_ssl.train.model import ModelSpec, build_model, load_model, replace_head
from edge_ssl.train.sources import Source, load_source, split_pretext
from edge_ssl.train.stages import StageResult, finish_stage, fit_stage

CALIBRATION_IMAGES = 256  # training images kept in heldout.npz for INT8 calibration
MAX_HELDOUT_PRETEXT = 2000


def device_description() -> str:
    """What TensorFlow trains on: the GPU when it sees one, else the CPU's model name."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"GPU ({', '.join(g.name for g in gpus)})"
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in
             (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
             if line.startswith("model name")]
    return f"CPU ({names[0] if names else platform.processor() or platform.machine()})"


def train(config: TrainConfig, run: Path, *, source: Source | None = None, resume: bool = False,
          extra_callbacks: list[keras.callbacks.Callback] | None = None) -> dict[str, Any]:
    """Run (or continue) both stages into `run`; returns the report also saved as report.json."""
    start = time.perf_counter()
    # Taking one batch for the samples picture stops a cache() mid-way, which tf.data reports
    # as a warning on every run; the cache simply fills on the first epoch instead.
    warnings.filterwarnings("ignore", message=".*did not fully read the dataset being cached")
    # Skipping unreadable files leaves a file-based dataset's length unknown until its first
    # pass; Keras then reports each epoch's end as "input ran out of data", which is expected.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision
                                            else "float32")
    source = source or load_source(config)
    for note in source.notes:
        console.print(f"[dim]{note}[/]")
    skipped = pipeline.SkippedFiles()
    spec = ModelSpec(config.image_size, config.width, config.effective_bn_momentum,
                     config.backbone_weights)
    size, batch = config.image_size, config.batch_size
    pretext_train, pretext_val = split_pretext(source.pretext, config.seed)
    pretext_val_px, _ = pipeline.decode_eagerly(pretext_val, size, skipped, "pretext validation")
    val_px, val_y = pipeline.decode_eagerly(source.val, size, skipped, "validation")
    assert val_y is not None  # labelled sets always carry labels
    report_path = run / C.REPORT_FILE
    report = json.loads(report_path.read_text()) if resume and report_path.exists() else {}
    if not resume:
        _write_config(run, config, source, spec)
        calib = source.train.take(np.random.default_rng(config.seed).permutation(
            len(source.train))[:CALIBRATION_IMAGES])
        calib_px, _ = pipeline.decode_eagerly(calib, size, skipped, "calibration")
        write_with(run / C.HELDOUT_FILE, lambda tmp: np.savez_compressed(tmp, **{
            C.HELDOUT_CLASSIFIER_IMAGES: val_px, C.HELDOUT_CLASSIFIER_LABELS: val_y,
            C.HELDOUT_PRETEXT_IMAGES: pretext_val_px[:MAX_HELDOUT_PRETEXT],
            C.HELDOUT_CALIBRATION_IMAGES: calib_px}))
    report.update(name=run.name, data=source.summary(), device=device_description(),
                  complete=False)
    verbosity = 1 if sys.stdout.isatty() else 2

    # Stage 1: rotation pretext.
    pretext_images = pipeline.image_dataset(pretext_train, size, skipped)
    pretext_train_ds = pipeline.pretext_train_dataset(
        pretext_images, batch, config.rotations, config.seed, len(pretext_train))
    pretext_val_ds = pipeline.pretext_eval_dataset(pretext_val_px, batch)
    if not (run / C.SAMPLES_PNG).exists():
        sample_x, sample_y = next(iter(pretext_train_ds))
        plots.save_pretext_samples(sample_x.numpy(), sample_y.numpy(), run / C.SAMPLES_PNG)
    pretext_path = run / C.PRETEXT_MODEL
    if pretext_path.exists():
        pretext = load_model(pretext_path)
        console.print(f"pretext: already trained, loaded {pretext_path}")
    else:
        console.print(f"[bold]Stage 1: rotation pretext[/] on {len(pretext_train)} images "
                      f"({config.rotations.value} rotations), {len(pretext_val_px)} held out")
        pretext = build_model(spec, len(C.ROTATION_LABELS), "pretext")
        result = fit_stage(
            pretext, pretext_train_ds, pretext_val_ds, epochs=config.pretext_epochs,
            learning_rate=config.learning_rate, patience=config.patience,
            lr_patience=config.lr_patience, samples_per_batch=batch,
            history_path=run / C.HISTORY_PRETEXT,
            checkpoint_dir=run / C.CHECKPOINTS_DIR / "pretext",
            verbose=verbosity, extra_callbacks=extra_callbacks)
        _finish(run, report, "pretext", pretext, pretext_path, result)

    # Stage 2: fine-tune, and the random-initialisation baseline on the same labels.
    train_images = pipeline.image_dataset(source.train, size, skipped)
    train_ds = pipeline.labelled_train_dataset(train_images, batch, config.seed, len(source.train))
    val_ds = pipeline.labelled_eval_dataset(val_px, val_y, batch)
    stages = [("finetune", C.CLASSIFIER_MODEL, C.HISTORY_FINETUNE)]
    if config.baseline:
        stages.append(("baseline", C.BASELINE_MODEL, C.HISTORY_BASELINE))
    for stage, model_file, history_file in stages:
        if (run / model_file).exists():
            console.print(f"{stage}: already trained, kept {run / model_file}")
            continue
        console.print(f"[bold]Stage 2: {stage}[/] on {len(source.train)} labelled images of "
                      f"{len(source.labels)} classes, {len(val_px)} validation images")
        if stage == "finetune":
            model = replace_head(pretext, len(source.labels),
                                 freeze_backbone=config.freeze is Freeze.backbone)
        else:
            keras.utils.set_random_seed(config.seed + 1)
            model = build_model(spec, len(source.labels), "baseline")
        result = fit_stage(
            model, train_ds, val_ds, epochs=config.finetune_epochs,
            learning_rate=config.learning_rate, patience=config.patience,
            lr_patience=config.lr_patience, samples_per_batch=batch,
            history_path=run / history_file, checkpoint_dir=run / C.CHECKPOINTS_DIR / stage,
            verbose=verbosity, extra_callbacks=extra_callbacks)
        _finish(run, report, stage, model, run / model_file, result)

    plots.save_curves({name: plots.read_history(run / f) for name, f in (
        ("pretext", C.HISTORY_PRETEXT), ("fine-tune", C.HISTORY_FINETUNE),
        ("baseline", C.HISTORY_BASELINE))}, run / C.CURVES_PNG)
    report["skipped_files"] = report.get("skipped_files", []) + skipped.messages
    report["wall_seconds"] = round(report.get("wall_seconds", 0.0)
                                   + time.perf_counter() - start, 1)
    report["complete"] = True
    write_json(report_path, report)
    if (run / C.CHECKPOINTS_DIR).exists() and not any((run / C.CHECKPOINTS_DIR).iterdir()):
        (run / C.CHECKPOINTS_DIR).rmdir()
    return report


def _finish(run: Path, report: dict[str, Any], stage: str, model: keras.Model, path: Path,
            result: StageResult) -> None:
    """Save the stage's model and metrics atomically, then drop its backup; NaN is an error."""
    if result.diverged and result.best_epoch == 0:
        raise TrainingError(f"{stage}: the loss became NaN in the first epoch and no usable "
                            "weights exist; lower --learning-rate and start a new run.")
    write_with(path, model.save)
    report[stage] = {k: round(v, 4) if isinstance(v, float) else v
                     for k, v in asdict(result).items()}
    write_json(run / C.REPORT_FILE, report)
    finish_stage(run / C.CHECKPOINTS_DIR / stage)
    console.print(f"{stage}: held-out accuracy {result.val_accuracy:.3f} "
                  f"({result.epochs_run} epochs, {result.images_per_second:.0f} images/s)")
    if result.diverged:
        raise TrainingError(
            f"{stage}: the loss became NaN; training stopped and the weights of epoch "
            f"{result.best_epoch} were kept in {path}. Lower --learning-rate and start a new run.")


def _write_config(run: Path, config: TrainConfig, source: Source, spec: ModelSpec) -> None:
    write_json(run / C.CONFIG_FILE, {
        C.CONFIG_NAME: run.name,
        C.CONFIG_LABELS: list(source.labels),
        C.CONFIG_IMAGE_SIZE: config.image_size,
        C.CONFIG_RESCALE: spec.rescale,
        "interpolation": INTERPOLATION,
        "bn_momentum": spec.bn_momentum,
        "config": config.to_dict(),
        "versions": {"edge_ssl": __version__, "tensorflow": tf.__version__,
                     "keras": keras.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "device": device_description(),
        "mixed_precision": config.mixed_precision,
    })
