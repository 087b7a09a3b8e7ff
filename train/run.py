"""`edge-ssl train` as a library call: the pretext, then the fine-tune and its baselines.

A stage is complete once its .keras file exists (written atomically); `--resume` skips complete
stages and lets Keras' BackupAndRestore continue the interrupted one from its last epoch.
Stage 1 lives in pretext_stage.py, stage 2 in finetune_stage.py, the run directory's other
files in artifacts.py; this module decides what runs, in which order, on which worker.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import keras
import numpy as np

from edge_ssl import contract as C
from edge_ssl.atomic import write_json
from edge_ssl.train import distribute, pipeline
from edge_ssl.train.artifacts import MAX_HELDOUT_PRETEXT, write_config, write_heldout
from edge_ssl.train.config import TrainConfig
from edge_ssl.train.environment import device_description, keras_verbosity, note_memory
from edge_ssl.train.finetune_stage import prepare_task, train_methods
from edge_ssl.train.model import load_model
from edge_ssl.train.pretext_stage import load_pretext, train_pretext, train_worker_share
from edge_ssl.train.session import Session
from edge_ssl.train.sources import ImageSet, Source, load_source, split_pretext

log = logging.getLogger(__name__)


def train(config: TrainConfig, run: Path, *, source: Source | None = None, resume: bool = False,
          extra_callbacks: list[keras.callbacks.Callback] | None = None,
          cluster: distribute.Cluster | None = None) -> dict[str, Any]:
    """Run (or continue) both stages into `run`; returns the report also saved as report.json.

    The pretext trains under `cluster`'s strategy (default: one device). Only the chief writes
    `run`; another worker of a multi-worker job trains its share of the pretext, reads the
    chief's checkpoints to resume, and leaves when the pretext is done.

    The fine-tune and its baselines always train on the chief's first device, with the batch
    and learning rate of the options: they see only the labelled images (tens to thousands),
    where a global batch of 32 × replicas would leave a few steps per epoch, and the methods
    are compared with each other under one training recipe whatever the machine.
    """
    start = time.perf_counter()
    _quiet_expected_warnings()
    keras.utils.set_random_seed(config.seed)
    keras.mixed_precision.set_global_policy("mixed_float16" if config.mixed_precision
                                            else "float32")
    source = source or load_source(config)
    # Decided once, from the data, and saved so: a resumed run keeps what it started with.
    config = config.resolve_rotation_loss(len(source.spare))
    for note in source.notes:
        log.info(note)
    session = Session(config, run, cluster or distribute.single_device(),
                      pipeline.SkippedFiles(), keras_verbosity(sys.stdout),
                      tuple(extra_callbacks or ()))
    pretext_train, heldout_px = _pretext_images(session, source)
    if not session.cluster.is_chief:
        return train_worker_share(session, pretext_train, heldout_px)

    task = prepare_task(session, source)
    report_path = run / C.REPORT_FILE
    report = json.loads(report_path.read_text()) if resume and report_path.exists() else {}
    if not resume:
        write_config(session, source, pretext_train)
        write_heldout(session, source, heldout_px, *task.test)
    report.update(name=run.name, data=source.summary(), device=device_description(),
                  complete=False, protocol=task.protocol(config, source))
    note_memory(report)

    if pretext_train is None or heldout_px is None:
        pretext = load_pretext(session, report)
    else:
        pretext = train_pretext(session, source, pretext_train, heldout_px, report)
    if session.cluster.name is not distribute.StrategyName.default:
        # The fine-tune trains on one device: a fresh copy of the pretext, whose variables are
        # plain ones rather than the strategy's mirrored ones.
        pretext = load_model(run / C.PRETEXT_MODEL)
    train_methods(session, source, task, pretext, report)

    report["skipped_files"] = report.get("skipped_files", []) + session.skipped.messages
    report["wall_seconds"] = round(report.get("wall_seconds", 0.0)
                                   + time.perf_counter() - start, 1)
    report["complete"] = True
    note_memory(report)
    write_json(report_path, report)
    if (run / C.CHECKPOINTS_DIR).exists() and not any((run / C.CHECKPOINTS_DIR).iterdir()):
        (run / C.CHECKPOINTS_DIR).rmdir()
    return report


def _pretext_images(session: Session, source: Source
                    ) -> tuple[ImageSet | None, np.ndarray | None]:
    """(training images, decoded held-out pixels) of a pretext still to train; (None, None)
    when this run's pretext is done or comes from another run."""
    config = session.config
    if config.pretext_from is not None or (session.run / C.PRETEXT_MODEL).exists():
        return None, None
    pretext_train, pretext_val = split_pretext(source.pretext, config.seed)
    heldout = pretext_val.take(range(min(len(pretext_val), MAX_HELDOUT_PRETEXT)))
    return pretext_train, session.decode(heldout, "pretext held-out")


def _quiet_expected_warnings() -> None:
    # Skipping unreadable files leaves a file-based dataset's length unknown until its first
    # pass; Keras then reports each epoch's end as "input ran out of data", which is expected.
    warnings.filterwarnings("ignore", message="Your input ran out of data")
    # A run stopped before one full pass (one short epoch, early stopping) leaves tf.data's
    # cache unfinished; tf.data drops it and says so, which is expected too.
    warnings.filterwarnings("ignore", message=".*did not fully read the dataset being cached")
