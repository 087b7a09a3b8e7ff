"""Fitting one stage with Keras callbacks: early stopping, LR plateau, backup for resume, CSV."""

from __future__ import annotations

import csv
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from edge_ssl.atomic import write_with
from edge_ssl.errors import TrainingError
from edge_ssl.train.distribute import WarmUp


@dataclass(frozen=True)
class StageResult:
    """How one stage's training went. Accuracies on test images are measured by the caller."""

    schedule: str  # "early-stopping" (on `selection_accuracy`'s images) or "fixed"
    selection_accuracy: float | None  # the restored weights on the selection split, if any
    epochs_run: int
    best_epoch: int
    images_per_second: float  # training samples/s, median of the epochs after the first
    first_epoch_images_per_second: float  # the session's first epoch: files decoded, cache filled
    wall_seconds: float
    diverged: bool

    def raise_if_diverged(self, stage: str, path: Path) -> None:
        """TrainingError, naming `stage` and the weights kept in `path`, if the loss went NaN."""
        if self.diverged:
            raise TrainingError(
                f"{stage}: the loss became NaN; training stopped and the weights of epoch "
                f"{self.best_epoch} were kept in {path}. Lower --learning-rate and start a new "
                "run.")


class Throughput(keras.callbacks.Callback):
    """Training samples per second of each epoch, timed from the end of its first batch (which
    carries graph tracing and the first fill of the prefetch buffer) to the end of its last.

    Validation is left out. The first epoch of a session reads image files and fills the
    decoded-image cache; later epochs read the cache, so the two rates compare the two sources.
    """

    def __init__(self, samples_per_batch: int) -> None:
        super().__init__()
        self.samples_per_batch = samples_per_batch
        self.rates: list[float] = []
        self._start = 0.0
        self._batches = 0
        self._end = 0.0
        self._first = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self._start, self._batches = time.perf_counter(), 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._batches += 1
        self._end = time.perf_counter()
        if self._batches == 1:
            self._first = self._end

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._batches > 1 and self._end > self._first:
            seconds, batches = self._end - self._first, self._batches - 1
        elif self._batches and self._end > self._start:
            seconds, batches = self._end - self._start, self._batches
        else:
            return
        self.rates.append(batches * self.samples_per_batch / seconds)

    @property
    def images_per_second(self) -> float:
        """Median over the epochs after the first (the first decodes files)."""
        steady = self.rates[1:] or self.rates
        return sorted(steady)[len(steady) // 2] if steady else 0.0

    @property
    def first_epoch_images_per_second(self) -> float:
        return self.rates[0] if self.rates else 0.0


@dataclass(frozen=True)
class Recipe:
    """How long and how fast a stage trains, and what decides when it stops.

    Attributes:
        epochs: the most epochs (all of them with a fixed schedule).
        learning_rate: Adam's rate (the peak, after any warm-up).
        patience: EarlyStopping's, on the selection accuracy.
        lr_patience: ReduceLROnPlateau's, on the selection loss.
        cosine: cosine decay in ReduceLROnPlateau's place also when a selection set stops early.
        warmup: (starting rate, updates) of a linear warm-up to `learning_rate`.
        accumulation: micro-batches whose gradients the optimizer averages into one update.
        weight_decay: decoupled weight decay (AdamW's), 0 for none.
    """

    epochs: int
    learning_rate: float
    patience: int
    lr_patience: int
    cosine: bool = False
    warmup: tuple[float, int] | None = None
    accumulation: int = 1
    weight_decay: float = 0.0


@dataclass(frozen=True)
class Checkpoints:
    """Where a stage keeps what lets it resume, and where its CSV log ends up.

    Attributes:
        folder: the stage's backup and CSV log while it trains.
        history: where the CSV log is copied at the end (None: nowhere).
        restore_from: on a worker that is not the chief, the chief's folder to resume from.
        resumable: back up after every epoch; a study cell, redone whole when a study resumes,
            saves the quarter of its time the backup costs.
    """

    folder: Path
    history: Path | None = None
    restore_from: Path | None = None
    resumable: bool = True


def fit_stage(
    model: keras.Model,
    train: tf.data.Dataset,
    selection: tf.data.Dataset | None,
    recipe: Recipe,
    checkpoints: Checkpoints,
    *,
    samples_per_batch: int,
    steps_per_epoch: int | None = None,
    verbose: int = 0,
    monitors: Sequence[keras.callbacks.Callback] = (),
    extra_callbacks: Sequence[keras.callbacks.Callback] = (),
) -> StageResult:
    """Compile and fit `model`, resuming from `checkpoints` if an earlier fit was cut short.

    Call it inside the strategy's scope for distributed training, with `train` a distributed
    dataset and `steps_per_epoch` its steps per epoch (it repeats endlessly). Every worker
    resumes from the chief's backup (a shared file system), and writes its own only to its
    `checkpoints.folder`. With `recipe.accumulation` > 1, `train`'s batches are micro-batches
    (`steps_per_epoch` counts micro-batches, a multiple of it; the warm-up counts updates).

    With a `selection` set, EarlyStopping (best weights restored) and ReduceLROnPlateau watch it;
    without one the schedule is fixed: cosine decay over the epochs, by epoch so that a resumed
    run continues the same curve, and the last epoch's weights are kept. `monitors` add their
    own columns to the CSV log, so they run before it. The Keras CSV log lives in the checkpoint
    folder while training (appended epoch by epoch, it survives an interruption) and is copied
    atomically to `checkpoints.history` at the end.

    Raises:
        TrainingError: the loss became NaN and no finite weights are left to keep.
    """
    epochs, learning_rate, accumulation = recipe.epochs, recipe.learning_rate, recipe.accumulation
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate, weight_decay=recipe.weight_decay or None,
            gradient_accumulation_steps=accumulation if accumulation > 1 else None),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    checkpoints.folder.mkdir(parents=True, exist_ok=True)
    backup = checkpoints.folder / "backup"
    restore_from = checkpoints.restore_from
    if restore_from is not None and (restore_from / "backup").is_dir():
        shutil.copytree(restore_from / "backup", backup, dirs_exist_ok=True)
    log_path = checkpoints.folder / "history.csv"
    throughput = Throughput(samples_per_batch)
    early = None
    schedule: list[keras.callbacks.Callback] = []
    if selection is not None:
        early = keras.callbacks.EarlyStopping(
            monitor="val_accuracy", patience=recipe.patience, restore_best_weights=True,
            verbose=0)
        schedule.append(early)
    if selection is None or recipe.cosine:
        schedule.append(keras.callbacks.LearningRateScheduler(
            lambda epoch: cosine_learning_rate(learning_rate, epoch, epochs)))
    else:
        schedule.append(keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=recipe.lr_patience, verbose=0))
    if recipe.warmup is not None:
        start_rate, warmup_steps = recipe.warmup
        schedule.append(WarmUp(start_rate, learning_rate, warmup_steps, accumulation))
    callbacks = [
        *([keras.callbacks.BackupAndRestore(str(backup), delete_checkpoint=False,
                                            double_checkpoint=True)]
          if checkpoints.resumable else []),
        keras.callbacks.TerminateOnNaN(),
        *schedule,
        *monitors,
        keras.callbacks.CSVLogger(str(log_path), append=True),
        throughput,
        *extra_callbacks,
    ]
    start = time.perf_counter()
    # shuffle=False: the tf.data pipeline already shuffles (Keras warns otherwise).
    history = model.fit(train, validation_data=selection, epochs=epochs, callbacks=callbacks,
                        verbose=verbose, shuffle=False, steps_per_epoch=steps_per_epoch)
    wall = time.perf_counter() - start
    diverged = any(not math.isfinite(v) for v in history.history.get("loss", []))
    best_epoch = _rows(log_path)
    if early is not None and early.best_weights is not None:
        # TerminateOnNaN ends training without EarlyStopping's restore: do it here.
        model.set_weights(early.best_weights)
        best_epoch = int(early.best_epoch) + 1
    if not all(np.isfinite(w).all() for w in model.get_weights()):
        raise TrainingError(f"the loss became NaN and no finite weights are left (best epoch "
                            f"{best_epoch if early is not None else 'none'}); nothing was "
                            "saved. Lower --learning-rate and start a new run.")
    selection_accuracy = (float(model.evaluate(selection, verbose=0)[1])
                          if selection is not None else None)
    if log_path.exists() and checkpoints.history is not None:
        write_with(checkpoints.history, lambda tmp: shutil.copyfile(log_path, tmp))
    return StageResult(
        schedule="early-stopping" if selection is not None else "fixed",
        selection_accuracy=selection_accuracy,
        epochs_run=_rows(log_path),
        best_epoch=best_epoch,
        images_per_second=throughput.images_per_second,
        first_epoch_images_per_second=throughput.first_epoch_images_per_second,
        wall_seconds=wall,
        diverged=diverged,
    )


def cosine_learning_rate(initial: float, epoch: int, epochs: int) -> float:
    """Half a cosine from `initial` at epoch 0 down to 1 % of it at the last epoch."""
    progress = epoch / max(1, epochs - 1)
    return initial * (0.01 + 0.99 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _rows(csv_path: Path) -> int:
    if not csv_path.exists():
        return 0
    with csv_path.open() as f:
        return max(0, sum(1 for _ in csv.reader(f)) - 1)


def finish_stage(checkpoint_dir: Path) -> None:
    """Drop a stage's backup once its model is safely on disk."""
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
