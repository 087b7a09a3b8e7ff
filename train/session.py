"""One process's part in a run: what every stage of `edge-ssl train` is handed."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import keras

from edge_ssl import contract as C
from edge_ssl.train.config import TrainConfig
from edge_ssl.train.distribute import Cluster
from edge_ssl.train.pipeline import SkippedFiles


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

    def callbacks_for(self, stage: str) -> list[keras.callbacks.Callback]:
        """`callbacks`, and with --tensorboard Keras' own logger into RUN/tensorboard/<stage>/."""
        tensorboard = ([keras.callbacks.TensorBoard(str(self.run / C.TENSORBOARD_DIR / stage))]
                       if self.config.tensorboard else [])
        return [*self.callbacks, *tensorboard]

    def checkpoint_dir(self, stage: str) -> Path:
        """Where `stage` keeps its backup and CSV log while it trains."""
        return self.run / C.CHECKPOINTS_DIR / stage
