"""One process's part in a run: what every stage of `edge-ssl train` is handed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np

from edge_ssl import contract as C
from edge_ssl.train.config import TrainConfig
from edge_ssl.train.distribute import Cluster
from edge_ssl.train.pipeline import SkippedFiles, decode_eagerly, decode_labelled
from edge_ssl.train.sources import ImageSet


@dataclass(frozen=True)
class Session:
    """The run being trained, by this process.

    Attributes:
        config: the run's options.
        run: the run directory (only the chief writes it).
        cluster: the strategy the pretext trains with, and this process's part in it.
        skipped: the unreadable files met so far, reported once each.
        verbosity: Keras' `fit` verbosity (a progress bar on a terminal, a line per epoch else).
        callbacks: more Keras callbacks for every stage (tests use them to interrupt a run).
    """

    config: TrainConfig
    run: Path
    cluster: Cluster
    skipped: SkippedFiles
    verbosity: int
    callbacks: tuple[keras.callbacks.Callback, ...] = ()

    def decode(self, images: ImageSet, what: str) -> np.ndarray:
        """uint8 `[N, S, S, 3]` pixels of `images` at the run's size; unreadable files skipped."""
        return decode_eagerly(images, self.config.image_size, self.skipped, what)[0]

    def decode_labelled(self, images: ImageSet, what: str) -> tuple[np.ndarray, np.ndarray]:
        """`decode` for images with labels: (pixels, int64 labels of the images read)."""
        return decode_labelled(images, self.config.image_size, self.skipped, what)

    def callbacks_for(self, stage: str) -> list[keras.callbacks.Callback]:
        """`callbacks`, and with --tensorboard Keras' own logger into RUN/tensorboard/<stage>/."""
        tensorboard = ([keras.callbacks.TensorBoard(str(self.run / C.TENSORBOARD_DIR / stage))]
                       if self.config.tensorboard else [])
        return [*self.callbacks, *tensorboard]

    def checkpoint_dir(self, stage: str) -> Path:
        """Where `stage` keeps its backup and CSV log while it trains."""
        return self.run / C.CHECKPOINTS_DIR / stage
