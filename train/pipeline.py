"""tf.data input pipelines: decode → cache → shuffle → augment → rotate → prefetch.

Augmentation happens here, never in the model: random layers do not convert to ONNX and must not
run at inference. Images stay uint8 end to end; the model casts and rescales them itself.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np
import tensorflow as tf

from edge_ssl.console import err_console
from edge_ssl.errors import DataError, ImageDecodeError
from edge_ssl.images import load_rgb
from edge_ssl.train.config import Rotations
from edge_ssl.train.sources import ImageSet

AUTOTUNE = tf.data.AUTOTUNE
NUM_ROTATIONS = 4


class SkippedFiles:
    """Collects unreadable training files: each is reported once, then skipped, never fatal."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        err_console.print(f"[yellow]warning:[/] skipped {message}", soft_wrap=True)


def decode_eagerly(images: ImageSet, size: int, skipped: SkippedFiles,
                   what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels (`uint8 [N, S, S, 3]`) and labels of a small set, e.g. validation images."""
    if images.pixels is not None:
        return images.pixels, images.labels

    def load(path: object) -> np.ndarray | None:
        try:
            return load_rgb(path, size)  # type: ignore[arg-type]
        except ImageDecodeError as exc:
            skipped(str(exc))
            return None

    with ThreadPoolExecutor() as pool:
        decoded = list(pool.map(load, images.paths))
    keep = [i for i, px in enumerate(decoded) if px is not None]
    good = [px for px in decoded if px is not None]
    if not good:
        raise DataError(f"none of the {len(decoded)} {what} images could be read; "
                        "check the files reported above.")
    pixels = np.stack(good)
    labels = images.labels[keep] if images.labels is not None else None
    return pixels, labels


def image_dataset(images: ImageSet, size: int, skipped: SkippedFiles) -> tf.data.Dataset:
    """Decoded, cached images (with labels when the set has them); corrupt files are skipped."""
    if images.pixels is not None:
        tensors = (images.pixels,) if images.labels is None else (images.pixels, images.labels)
        return tf.data.Dataset.from_tensor_slices(tensors).cache()

    def decode(path: bytes) -> tuple[np.ndarray, bool]:
        try:
            return load_rgb(path.decode(), size), True
        except ImageDecodeError as exc:
            skipped(str(exc))
            return np.zeros((size, size, 3), np.uint8), False

    def decode_tf(path: tf.Tensor, *label: tf.Tensor) -> tuple[tf.Tensor, ...]:
        # Pillow, not tf.io.decode_image: the runtime decodes with Pillow, and a corrupt file
        # must become a warning, not an exception that kills the epoch.
        pixels, ok = tf.numpy_function(decode, [path], (tf.uint8, tf.bool), stateful=False)
        pixels.set_shape((size, size, 3))
        return (pixels, *label, ok)

    paths = [str(p) for p in images.paths]
    tensors = (paths,) if images.labels is None else (paths, images.labels)
    return (tf.data.Dataset.from_tensor_slices(tensors)
            .map(decode_tf, num_parallel_calls=AUTOTUNE)
            .filter(lambda *item: item[-1])
            .map(lambda *item: item[:-1] if len(item) > 2 else item[0])
            .cache())


def make_augmenter(seed: int) -> keras.Sequential:
    """Random flip, zoom ±10 %, contrast ±10 %, on float pixels in [0, 255]."""
    return keras.Sequential([
        keras.layers.RandomFlip("horizontal", seed=seed),
        keras.layers.RandomZoom(0.1, seed=seed + 1),
        keras.layers.RandomContrast(0.1, value_range=(0, 255), seed=seed + 2),
    ], name="augment")


def augment(augmenter: keras.Sequential, images: tf.Tensor) -> tf.Tensor:
    """uint8 `[B, S, S, 3]` → augmented uint8 `[B, S, S, 3]`."""
    x = augmenter(tf.cast(images, tf.float32), training=True)
    return tf.cast(tf.clip_by_value(tf.round(x), 0, 255), tf.uint8)


def rotate_all(images: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """`[B, S, S, 3]` → every image at k·90° counter-clockwise (as np.rot90), labels k: `[4B]`."""
    rotated = tf.concat([tf.image.rot90(images, k) for k in range(NUM_ROTATIONS)], axis=0)
    labels = tf.repeat(tf.range(NUM_ROTATIONS, dtype=tf.int32), tf.shape(images)[0])
    return rotated, labels


def rotate_random(images: tf.Tensor, generator: tf.random.Generator) -> tuple[tf.Tensor, tf.Tensor]:
    """`[B, S, S, 3]` → each image at one random k·90°, labels k: `[B]`."""
    all_rotations = tf.stack([tf.image.rot90(images, k) for k in range(NUM_ROTATIONS)], axis=1)
    labels = generator.uniform([tf.shape(images)[0]], 0, NUM_ROTATIONS, dtype=tf.int32)
    return tf.gather(all_rotations, labels, axis=1, batch_dims=1), labels


def augment_then_rotate(
    images: tf.Tensor,
    augment_fn: Callable[[tf.Tensor], tf.Tensor],
    rotate_fn: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
) -> tuple[tf.Tensor, tf.Tensor]:
    """Augment first, then rotate: a flip after a rotation would turn 90° into 270°."""
    return rotate_fn(augment_fn(images))


def pretext_train_dataset(images: tf.data.Dataset, batch_size: int, rotations: Rotations,
                          seed: int, num_images: int) -> tf.data.Dataset:
    """Shuffled, augmented, rotated batches of `batch_size` samples (uint8 images, int labels)."""
    augmenter = make_augmenter(seed)
    if rotations is Rotations.all:
        per_batch = batch_size // NUM_ROTATIONS  # all four rotations of each image together
        rotate: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]] = rotate_all
    else:
        per_batch = batch_size
        generator = tf.random.Generator.from_seed(seed)

        def rotate(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return rotate_random(x, generator)

    return (images.shuffle(num_images, seed=seed, reshuffle_each_iteration=True)
            .batch(per_batch)
            .map(lambda x: augment_then_rotate(x, lambda b: augment(augmenter, b), rotate),
                 num_parallel_calls=AUTOTUNE if rotations is Rotations.all else None)
            .prefetch(AUTOTUNE))


def pretext_eval_dataset(pixels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Held-out images in all four rotations, unaugmented: the rotation accuracy we report."""
    return (tf.data.Dataset.from_tensor_slices(pixels).batch(batch_size)
            .map(rotate_all, num_parallel_calls=AUTOTUNE).cache().prefetch(AUTOTUNE))


def labelled_train_dataset(images: tf.data.Dataset, batch_size: int, seed: int,
                           num_images: int) -> tf.data.Dataset:
    """Shuffled, augmented labelled batches for the fine-tune."""
    augmenter = make_augmenter(seed + 100)
    return (images.shuffle(num_images, seed=seed, reshuffle_each_iteration=True)
            .batch(batch_size)
            .map(lambda x, y: (augment(augmenter, x), y), num_parallel_calls=AUTOTUNE)
            .prefetch(AUTOTUNE))


def labelled_eval_dataset(pixels: np.ndarray, labels: np.ndarray,
                          batch_size: int) -> tf.data.Dataset:
    return (tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(batch_size)
            .cache().prefetch(AUTOTUNE))
