"""Bounded step memory on the CPU: batches split into micro-batches with accumulated gradients."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from edge_ssl.train import step_memory  # noqa: E402
from edge_ssl.train.config import Rotations, TrainConfig  # noqa: E402
from edge_ssl.train.model import build_model, model_spec  # noqa: E402
from edge_ssl.train.stages import Checkpoints, Recipe, fit_stage  # noqa: E402

MB = 10**6


def test_split_uses_the_fewest_micro_batches_that_fit() -> None:
    # 83 MB a sample (about MobileNetV2 width 1.0 at 224 px) and a 1.5 GB budget: 16 fit, 32
    # do not.
    assert step_memory.split_batch(32, 83 * MB, 1500 * MB, 4) == 2
    assert step_memory.split_batch(32, 4 * MB, 1500 * MB, 4) == 1  # 64 px: nothing to split
    assert step_memory.split_batch(32, 180 * MB, 1500 * MB, 4) == 4  # micro-batches of 8
    # Nothing fits: the smallest micro-batch that keeps an image's four rotations together.
    assert step_memory.split_batch(32, 10**4 * MB, 1500 * MB, 4) == 8
    assert step_memory.split_batch(12, 10**4 * MB, 1500 * MB, 1) == 12  # one random rotation
    assert step_memory.split_batch(12, 300 * MB, 1500 * MB, 1) == 3  # 12 = 3 × 4, not 5 × 2.4


def test_activation_estimate_follows_the_image_area_and_splits_a_big_step() -> None:
    small = TrainConfig(width=0.35, image_size=32)
    large = TrainConfig(width=0.35, image_size=64, step_memory_gb=0.04)
    per_sample = [step_memory.activation_bytes_per_sample(build_model(model_spec(c), 4, "p"))
                  for c in (small, large)]
    assert 3.5 < per_sample[1] / per_sample[0] < 4.5  # four times the pixels
    plan = step_memory.plan_steps(large, build_model(model_spec(large), 4, "p"), 1)
    assert plan.sample_bytes == per_sample[1]
    assert plan.accumulation > 1 and plan.micro_batch * plan.accumulation == 32
    assert plan.step_bytes <= 0.04e9 < 2 * plan.step_bytes  # the fewest splits that fit
    assert plan.to_json()["gradient_accumulation_steps"] == plan.accumulation
    roomy = step_memory.plan_steps(small, build_model(model_spec(small), 4, "p"), 1)
    assert (roomy.accumulation, roomy.micro_batch) == (1, 32)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        raise KeyboardInterrupt


def _fit(tmp: Path, weights: list[np.ndarray], batch: int, accumulation: int,
         interrupt: bool = False) -> keras.Model:
    """Two epochs of a BatchNorm-free network on a fixed stream of 32 samples."""
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 6)).astype("float32"), rng.integers(0, 4, 32)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(4, activation="softmax")])
    model.set_weights(weights)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).repeat()
    fit_stage(model, data, None,
              Recipe(2, 0.05, patience=1, lr_patience=1, accumulation=accumulation),
              Checkpoints(tmp), samples_per_batch=batch, steps_per_epoch=32 // batch,
              extra_callbacks=[Interrupt()] if interrupt else [])
    return model


def test_accumulated_micro_batches_train_like_the_full_batch_and_resume(tmp_path: Path) -> None:
    start = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                              keras.layers.Dense(4)]).get_weights()
    full = _fit(tmp_path / "full", start, batch=8, accumulation=1)
    micro = _fit(tmp_path / "micro", start, batch=4, accumulation=2)
    assert int(micro.optimizer.iterations.numpy()) == 8  # updates, not micro-batches
    for a, b in zip(full.get_weights(), micro.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
    moved = [np.abs(a - b).max() for a, b in zip(full.get_weights(), start, strict=True)]
    assert max(moved) > 1e-2  # it trained
    with pytest.raises(KeyboardInterrupt):
        _fit(tmp_path / "cut", start, batch=4, accumulation=2, interrupt=True)
    resumed = _fit(tmp_path / "cut", start, batch=4, accumulation=2)
    for a, b in zip(micro.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_pretext_batches_come_as_micro_batches() -> None:
    from edge_ssl.train import demo_data, pipeline
    from edge_ssl.train.sources import ImageSet

    pixels, _ = demo_data.generate(16, seed=1, image_size=32)
    source = pipeline.PretextInput(ImageSet(pixels=pixels), 32, 16, Rotations.all, seed=0,
                                   replicas=1, skipped=pipeline.SkippedFiles(),
                                   cache_dirs=lambda _: None, accumulation=2)
    assert (source.micro_batch, source.samples_per_step) == (8, 8)
    # One update per 4 images (16 samples), in 2 micro-batches.
    assert source.steps_per_epoch == 2 * (len(pixels) // 4)
    context = tf.distribute.InputContext(1, 0, 1)
    images, labels = next(iter(source.dataset(context)))
    assert images.shape[0] == 8 and sorted(labels.numpy().tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]
