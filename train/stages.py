"""Fitting one stage with Keras callbacks: early stopping, LR plateau, backup for resume, CSV."""

from __future__ import annotations

import csv
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from edge_ssl.atomic import write_with


@dataclass(frozen=True)
class StageResult:
    """What one stage reports: held-out accuracy in inference mode, never from training logs."""

    val_accuracy: float
    val_loss: float
    epochs_run: int
    best_epoch: int
    images_per_second: float
    wall_seconds: float
    diverged: bool


class Throughput(keras.callbacks.Callback):
    """Training samples per second, timed from the first to the last batch of each epoch.

    Validation and the first epoch (graph tracing, cache filling) are left out.
    """

    def __init__(self, samples_per_batch: int) -> None:
        super().__init__()
        self.samples_per_batch = samples_per_batch
        self.rates: list[float] = []
        self._start = 0.0
        self._batches = 0
        self._end = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start, self._batches = time.perf_counter(), 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches += 1
        self._end = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._batches and self._end > self._start:
            self.rates.append(self._batches * self.samples_per_batch / (self._end - self._start))

    @property
    def images_per_second(self) -> float:
        steady = self.rates[1:] or self.rates
        return sorted(steady)[len(steady) // 2] if steady else 0.0


def fit_stage(
    model: keras.Model,
    train: tf.data.Dataset,
    val: tf.data.Dataset,
    *,
    epochs: int,
    learning_rate: float,
    patience: int,
    lr_patience: int,
    samples_per_batch: int,
    history_path: Path,
    checkpoint_dir: Path,
    verbose: int,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
) -> StageResult:
    """Compile and fit `model`, resuming from `checkpoint_dir` if an earlier fit was cut short.

    The Keras CSV log lives in the checkpoint folder while training (it is appended epoch by
    epoch, so it survives an interruption) and is copied atomically to `history_path` at the end.
    """
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    log_path = checkpoint_dir / "history.csv"
    early = keras.callbacks.EarlyStopping(
        monitor="val_accuracy", patience=patience, restore_best_weights=True, verbose=0)
    throughput = Throughput(samples_per_batch)
    callbacks = [
        keras.callbacks.BackupAndRestore(str(checkpoint_dir / "backup"), delete_checkpoint=False,
                                         double_checkpoint=True),
        keras.callbacks.TerminateOnNaN(),
        early,
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=lr_patience,
                                          verbose=0),
        keras.callbacks.CSVLogger(str(log_path), append=True),
        throughput,
        *(extra_callbacks or []),
    ]
    start = time.perf_counter()
    # shuffle=False: the tf.data pipeline already shuffles (Keras warns otherwise).
    history = model.fit(train, validation_data=val, epochs=epochs, callbacks=callbacks,
                        verbose=verbose, shuffle=False)
    wall = time.perf_counter() - start
    losses = history.history.get("loss", [])
    diverged = any(not math.isfinite(v) for v in losses)
    val_loss, val_accuracy = model.evaluate(val, verbose=0)
    if log_path.exists():
        write_with(history_path, lambda tmp: shutil.copyfile(log_path, tmp))
    return StageResult(
        val_accuracy=float(val_accuracy),
        val_loss=float(val_loss),
        epochs_run=_rows(log_path),
        best_epoch=int(early.best_epoch) + 1 if early.best_weights is not None else 0,
        images_per_second=throughput.images_per_second,
        wall_seconds=wall,
        diverged=diverged,
    )


def _rows(csv_path: Path) -> int:
    if not csv_path.exists():
        return 0
    with csv_path.open() as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)


def finish_stage(checkpoint_dir: Path) -> None:
    """Drop a stage's backup once its model is safely on disk."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
