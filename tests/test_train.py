"""Training end to end on tiny settings: artifacts, resume, learning, divergence."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from edge_ssl import contract as C  # noqa: E402
from edge_ssl.errors import TrainingError  # noqa: E402
from edge_ssl.rundir import create_run_dir  # noqa: E402
from edge_ssl.train.config import TrainConfig  # noqa: E402
from edge_ssl.train.environment import keras_verbosity  # noqa: E402
from edge_ssl.train.pretext_stage import rotation_rate  # noqa: E402
from edge_ssl.train.run import train  # noqa: E402

TINY = dict(demo_per_class=8, image_size=32, width=0.35, batch_size=8, finetune_steps=0)


class Interrupt(keras.callbacks.Callback):
    """Stands in for Ctrl-C or a killed job after `after_epoch` completed epochs."""

    def __init__(self, after_epoch: int) -> None:
        super().__init__()
        self.after_epoch = after_epoch

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == self.after_epoch:
            raise KeyboardInterrupt


class FirstEpochs(keras.callbacks.Callback):
    def __init__(self) -> None:
        super().__init__()
        self.first: list[int] = []
        self._fresh = True

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._fresh = True

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self._fresh:
            self.first.append(epoch)
            self._fresh = False


def _epochs(path: Path) -> list[int]:
    with path.open() as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_keras_draws_its_progress_bar_only_on_a_terminal() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    assert keras_verbosity(Terminal()) == 1  # a bar redrawn every batch
    assert keras_verbosity(io.StringIO()) == 2  # a pipe or a log file: one line per epoch


def test_resume_continues_at_the_next_epoch(tmp_path: Path) -> None:
    config = TrainConfig(**TINY, pretext_epochs=3, finetune_epochs=1)
    run = create_run_dir(tmp_path / "runs", "r", overwrite=False)
    with pytest.raises(KeyboardInterrupt):
        train(config, run, extra_callbacks=[Interrupt(after_epoch=1)])
    assert not (run / C.PRETEXT_MODEL).exists()
    assert (run / C.CHECKPOINTS_DIR / "pretext" / "backup").is_dir()

    starts = FirstEpochs()
    report = train(config, run, resume=True, extra_callbacks=[starts])
    # The pretext picks up at epoch 3 (index 2); the fine-tune's head-only epochs and its
    # every-layer epochs start fresh.
    assert starts.first == [2, 0, 0]
    assert _epochs(run / C.HISTORY_PRETEXT) == [0, 1, 2]
    assert report["complete"] and report["pretext"]["epochs_run"] == 3
    assert not (run / C.CHECKPOINTS_DIR).exists()  # backups dropped once models are saved


class PoisonWeights(keras.callbacks.Callback):
    """Makes the loss NaN from `epoch` on, as a too-high learning rate eventually would."""

    def __init__(self, epoch: int) -> None:
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if epoch == self.epoch:
            head = self.model.get_layer("head")
            head.kernel.assign(np.full(head.kernel.shape, np.nan, np.float32))


def test_nan_loss_stops_training_and_keeps_best_weights(tmp_path: Path) -> None:
    config = TrainConfig(**TINY, pretext_epochs=4, finetune_epochs=1)
    run = create_run_dir(tmp_path / "runs", "nan", overwrite=False)
    with pytest.raises(TrainingError, match=r"NaN; training stopped and the weights of epoch 1"):
        train(config, run, extra_callbacks=[PoisonWeights(epoch=1)])
    model = keras.models.load_model(run / C.PRETEXT_MODEL)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert json.loads((run / C.REPORT_FILE).read_text())["pretext"]["diverged"] is True
    assert not (run / C.CLASSIFIER_MODEL).exists()


def test_nan_in_the_first_epoch_writes_no_model(tmp_path: Path) -> None:
    config = TrainConfig(**TINY, pretext_epochs=3, finetune_epochs=1)
    run = create_run_dir(tmp_path / "runs", "nan0", overwrite=False)
    with pytest.raises(TrainingError, match="no finite weights are left"):
        train(config, run, extra_callbacks=[PoisonWeights(epoch=0)])
    assert not (run / C.PRETEXT_MODEL).exists()
    assert not (run / C.CLASSIFIER_MODEL).exists()


@pytest.mark.slow
def test_pretext_learns_rotation_well_above_chance(tmp_path: Path) -> None:
    """The pretext really learns: held-out rotation accuracy, in inference mode, > 0.6."""
    config = TrainConfig(demo_per_class=150, image_size=32, width=0.35, pretext_epochs=2,
                         finetune_epochs=1, finetune_steps=0)
    run = create_run_dir(tmp_path / "runs", "learn", overwrite=False)
    report = train(config, run)
    assert report["pretext"]["heldout_rotation"]["percent"] > 60, report["pretext"]
    # The reported number is measured on held-out images, not read from the training log.
    model = keras.models.load_model(run / C.PRETEXT_MODEL)
    held = np.load(run / C.HELDOUT_FILE)[C.HELDOUT_PRETEXT_IMAGES]
    k = np.arange(len(held)) % 4
    rotated = np.stack([np.rot90(img, int(r)) for img, r in zip(held, k, strict=True)])
    accuracy = float((model.predict(rotated, verbose=0).argmax(1) == k).mean())
    assert accuracy > 0.6
    assert json.loads((run / C.CONFIG_FILE).read_text())["bn_momentum"] == 0.9


def test_rotation_rate_rotates_a_chunk_at_a_time() -> None:
    from edge_ssl.train import methods, pipeline
    from edge_ssl.train.model import ModelSpec, build_model

    model = build_model(ModelSpec(image_size=32, width=0.35, bn_momentum=0.9), 4, "pretext")
    pixels = np.random.default_rng(1).integers(0, 256, (7, 32, 32, 3), dtype=np.uint8)
    rotated, k = (np.asarray(t) for t in pipeline.rotate_all(pixels))
    whole = methods.predict_classes(model, rotated) == k
    rate = rotation_rate(model, pixels, chunk=3)
    assert (rate.hits, rate.n) == (int(whole.sum()), 28)


class Rates(keras.callbacks.Callback):
    """The learning rate each epoch trains at (after the schedules set it)."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.rates.append(float(np.asarray(self.model.optimizer.learning_rate)))


@pytest.mark.parametrize("cosine", [False, True])
def test_pretext_learning_rate_decays_over_the_epochs_only_with_cosine(
        tmp_path: Path, cosine: bool) -> None:
    from edge_ssl.train.stages import Checkpoints, Recipe, cosine_learning_rate, fit_stage

    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 6)).astype("float32"), rng.integers(0, 4, 32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4, activation="softmax")])
    rates = Rates()
    fit_stage(model, data, data, Recipe(4, 0.01, patience=10, lr_patience=10, cosine=cosine),
              Checkpoints(tmp_path), samples_per_batch=8, extra_callbacks=[rates])
    expected = [cosine_learning_rate(0.01, e, 4) if cosine else 0.01 for e in range(4)]
    np.testing.assert_allclose(rates.rates, expected, rtol=1e-5)
    assert (rates.rates[-1] < 1e-3) is cosine
