"""One training step of each stage, and the input pipeline on JPEG files against cached tensors.

Steps run on the run's own trained models, compiled as `edge_ssl.train.stages.fit_stage` compiles
them. The pipeline benchmark trains one fine-tune epoch through `edge_ssl.train.pipeline` twice:
from files (decoded by edge-ssl's image rule inside tf.data, the first epoch of any real dataset)
and from already-decoded pixels (every later epoch, and the demo data). The fine-tune is the stage
that decodes the most per step: 32 files, against the pretext's 8 (each seen in four rotations).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bench_models import Settings
from bench_report import Results

from edge_ssl import contract
from edge_ssl.images import list_images
from edge_ssl.train.sources import ImageSet

pytestmark = pytest.mark.benchmark(group="train")


def compiled(path: Path) -> Any:
    """A stage's model, loaded and compiled with the trainer's optimiser, loss and metric."""
    import keras

    from edge_ssl.train.config import TrainConfig
    from edge_ssl.train.model import load_model

    model = load_model(path)
    model.compile(optimizer=keras.optimizers.Adam(TrainConfig().learning_rate),
                  loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def finetune_model(bench_run: Path, tensorflow_threads: None) -> Any:
    return compiled(bench_run / contract.CLASSIFIER_MODEL)


@pytest.fixture(scope="module")
def labelled_files(jpegs: Path, settings: Settings) -> ImageSet:
    """The first `pipeline_files` JPEGs, half of each class, with their labels."""
    from edge_ssl.train.demo_data import CLASSES

    per_class = settings.pipeline_files // len(CLASSES)
    paths = [path for name in CLASSES for path in list_images(jpegs / name)[:per_class]]
    labels = np.repeat(np.arange(len(CLASSES), dtype=np.int64), per_class)
    return ImageSet(paths=tuple(paths), labels=labels)


@pytest.mark.parametrize("stage", ["pretext", "finetune"])
def test_train_step(stage: str, bench_run: Path, finetune_model: Any,
                    validation_set: tuple[np.ndarray, np.ndarray], settings: Settings,
                    benchmark: Any, measure: Callable[..., None]) -> None:
    """`train_on_batch` on one batch (pretext: B/4 images in all four rotations), and the loss
    of that batch falls as it trains."""
    from edge_ssl.train import pipeline

    images, labels = validation_set
    batch = settings.train_batch
    if stage == "pretext":
        model = compiled(bench_run / contract.PRETEXT_MODEL)
        x, y = (np.asarray(t) for t in pipeline.rotate_all(
            np.resize(images, (batch // pipeline.NUM_ROTATIONS, *images.shape[1:]))))
    else:
        model = finetune_model
        x, y = np.resize(images, (batch, *images.shape[1:])), np.resize(labels, batch)
    benchmark.extra_info.update(stage=stage, batch_size=batch, threads=settings.threads)

    def loss() -> float:
        return float(model.train_on_batch(x, y, return_dict=True)["loss"])

    before = loss()
    measure(f"train-step-{stage}", lambda: model.train_on_batch(x, y), items=batch, warmup=3)
    # The same batch again and again: a step that really trains lowers that batch's loss.
    after = min(loss() for _ in range(3))
    assert after < before, f"{stage}: loss {before:.4f} → {after:.4f}, the step does not train"


@pytest.mark.parametrize("source", ["files", "cached"])
def test_input_pipeline(source: str, finetune_model: Any, labelled_files: ImageSet,
                        settings: Settings, results: Results, benchmark: Any,
                        measure: Callable[..., None]) -> None:
    """One fine-tune epoch through the trainer's tf.data pipeline, built afresh each round.

    Steps are `train_on_batch` calls rather than `fit`: at the end of an epoch of known length
    Keras starts iterating the next one, which costs `cached` (whose length tf.data knows) up to
    seconds that a one-epoch benchmark would wrongly charge to the pipeline. The share of each
    epoch spent waiting for the next batch is recorded too: unlike the two epochs' times, it
    does not depend on the machine being as fast during one benchmark as during the other.
    """
    from edge_ssl.train import pipeline

    skipped = pipeline.SkippedFiles()
    images = labelled_files
    if source == "cached":
        pixels, labels = pipeline.decode_eagerly(labelled_files, settings.image_size, skipped,
                                                 "benchmark")
        images = ImageSet(pixels=pixels, labels=labels)

    waiting: list[float] = []  # per epoch: seconds waiting for input / seconds in all
    steps = -(-len(images) // settings.train_batch)  # one pass over the images

    def epoch() -> None:
        start = time.perf_counter()
        batches = iter(pipeline.labelled_train_dataset(
            pipeline.image_dataset(images, settings.image_size, skipped), settings.train_batch,
            seed=0, num_images=len(images)).take(steps))
        waited = 0.0
        while True:
            asked = time.perf_counter()
            batch = next(batches, None)
            waited += time.perf_counter() - asked
            if batch is None:
                break
            finetune_model.train_on_batch(*batch)
        waiting.append(waited / (time.perf_counter() - start))

    benchmark.extra_info.update(source=source, files=len(images), steps=steps,
                                batch_size=settings.train_batch, threads=settings.threads)
    measure(f"pipeline-{source}", epoch, items=len(images), warmup=1, rounds=settings.rounds)
    results.input_wait[source] = float(np.median(waiting))
    benchmark.extra_info["share_of_epoch_waiting_for_input"] = results.input_wait[source]
    assert not skipped.messages
