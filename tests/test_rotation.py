"""Rotation labels, and augment-then-rotate: a flip after a rotation turns 90° into 270°."""

from __future__ import annotations

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")

from edge_ssl.train import pipeline  # noqa: E402
from edge_ssl.train.config import Rotations  # noqa: E402
from edge_ssl.train.sources import ImageSet  # noqa: E402


@pytest.fixture()
def images() -> np.ndarray:
    # Asymmetric content so every rotation and flip gives a different array.
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(3, 8, 8, 3), dtype=np.uint8)


def test_rotate_all_labels_match_np_rot90(images: np.ndarray) -> None:
    rotated, labels = pipeline.rotate_all(tf.constant(images))
    rotated, labels = rotated.numpy(), labels.numpy()
    assert rotated.shape == (12, 8, 8, 3)
    assert labels.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    for i, k in enumerate(labels):
        np.testing.assert_array_equal(rotated[i], np.rot90(images[i % 3], k))


def test_rotate_random_labels_match_np_rot90(images: np.ndarray) -> None:
    generator = tf.random.Generator.from_seed(3)
    seen: set[int] = set()
    for _ in range(10):
        rotated, labels = pipeline.rotate_random(tf.constant(images), generator)
        for i, k in enumerate(labels.numpy()):
            np.testing.assert_array_equal(rotated.numpy()[i], np.rot90(images[i], int(k)))
            seen.add(int(k))
    assert seen == {0, 1, 2, 3}


def test_flip_happens_before_rotation(images: np.ndarray) -> None:
    rotated, labels = pipeline.augment_then_rotate(
        tf.constant(images), tf.image.flip_left_right, pipeline.rotate_all)
    for i, k in enumerate(labels.numpy()):
        expected = np.rot90(np.fliplr(images[i % 3]), k)
        np.testing.assert_array_equal(rotated.numpy()[i], expected)
    # Flipping after the rotation would give a different (mislabelled) image for 90°.
    wrong = np.fliplr(np.rot90(images[0], 1))
    assert not np.array_equal(rotated.numpy()[3], wrong)


def _bright_edge(image: np.ndarray) -> int:
    """Where an image's bright band lies, as the k of np.rot90 that carries the top edge there:
    0 top, 1 left, 2 bottom, 3 right."""
    grey = image.astype(np.float32).mean(-1)
    edges = [grey[:4].mean(), grey[:, :4].mean(), grey[-4:].mean(), grey[:, -4:].mean()]
    return int(np.argmax(edges))


@pytest.mark.parametrize("rotations", list(Rotations))
def test_training_batches_carry_the_rotation_they_show(rotations: Rotations) -> None:
    """Through the trainer's own pipeline (flip, zoom, contrast, then rotate): every sample's
    label is where its top edge went. Rotating before the random flip would mislabel about half
    of the 90° and 270° samples, so this fails when the order is wrong."""
    up = np.zeros((16, 32, 32, 3), np.uint8)
    up[:, :8] = 255  # a bright band along the top edge; a horizontal flip keeps it there
    images = pipeline.image_dataset(ImageSet(pixels=up), 32, pipeline.SkippedFiles())
    batches = pipeline.pretext_train_dataset(images, 16, rotations, seed=0, num_images=len(up))
    seen = [(_bright_edge(x), int(y)) for _ in range(2) for xs, ys in batches
            for x, y in zip(xs.numpy(), ys.numpy(), strict=True)]
    assert len(seen) == 2 * len(up) * (4 if rotations is Rotations.all else 1)
    assert {label for _, label in seen} == {0, 1, 2, 3}
    assert [edge for edge, _ in seen] == [label for _, label in seen]


def test_augment_keeps_uint8_range_and_shape(images: np.ndarray) -> None:
    augmenter = pipeline.make_augmenter(seed=1)
    out = pipeline.augment(augmenter, tf.constant(images)).numpy()
    assert out.dtype == np.uint8 and out.shape == images.shape
