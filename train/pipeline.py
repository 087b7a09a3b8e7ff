"""tf.data input pipelines: decode → cache → shuffle → batch → augment → rotate → prefetch.

Augmentation happens here, never in the model: random layers do not convert to ONNX and must not
run at inference. Images stay uint8 end to end; the model casts and rescales them itself.

Memory stays bounded however many images there are: decoded images are cached in memory only
when they fit the budget the caller gives, otherwise in files on disk (tf.data's own cache), and
the shuffle buffer holds at most SHUFFLE_BUFFER_BYTES of images. Files are put in a seeded random
order before they are decoded, so that the cache holds them shuffled and the bounded buffer
mixes them further each epoch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from edge_ssl.errors import DataError, ImageDecodeError
from edge_ssl.images import load_rgb
from edge_ssl.train.config import Rotations
from edge_ssl.train.sources import ImageSet

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
NUM_ROTATIONS = 4
SHUFFLE_BUFFER_BYTES = 256 * 2**20  # decoded images the shuffle buffer may hold, in bytes
CACHE_FILE = "images"  # tf.data writes CACHE_FILE.index and CACHE_FILE.data-* beside it


class SkippedFiles:
    """Collects unreadable training files: each is reported once, then skipped, never fatal."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        log.warning("skipped %s", message)


def decode_eagerly(images: ImageSet, size: int, skipped: SkippedFiles,
                   what: str) -> tuple[np.ndarray, np.ndarray | None]:
    """Pixels (`uint8 [N, S, S, 3]`) and labels of a small set, e.g. validation images.

    Each image is decoded straight into its row of one array: a list of decoded images stacked
    at the end would hold the set twice, and the allocator keeps that peak.
    """
    if images.pixels is not None:
        return images.pixels, images.labels
    pixels = np.empty((len(images), size, size, 3), np.uint8)

    def load(index: int) -> bool:
        try:
            pixels[index] = load_rgb(images.paths[index], size)
        except ImageDecodeError as exc:
            skipped(str(exc))
            return False
        return True

    with ThreadPoolExecutor() as pool:
        ok = np.fromiter(pool.map(load, range(len(images))), bool, len(images))
    if not ok.any():
        raise DataError(f"none of the {len(images)} {what} images could be read; "
                        "check the files reported above.")
    labels = images.labels[ok] if images.labels is not None else None
    return (pixels if ok.all() else pixels[ok]), labels


def decode_labelled(images: ImageSet, size: int, skipped: SkippedFiles,
                    what: str) -> tuple[np.ndarray, np.ndarray]:
    """`decode_eagerly` for a set that carries labels (training, selection or test images)."""
    pixels, labels = decode_eagerly(images, size, skipped, what)
    if labels is None:
        raise TypeError(f"the {what} images carry no labels")
    return pixels, labels


def image_bytes(size: int) -> int:
    """Bytes of one decoded uint8 `[S, S, 3]` image."""
    return size * size * 3


def shuffle_buffer(num_images: int, size: int) -> int:
    """Images the shuffle buffer holds: all of them when small, SHUFFLE_BUFFER_BYTES' worth else."""
    return max(1, min(num_images, SHUFFLE_BUFFER_BYTES // image_bytes(size)))


def image_dataset(images: ImageSet, size: int, skipped: SkippedFiles, *,
                  cache: Path | None = None, shard: tuple[int, int] = (1, 0),
                  order_seed: int | None = None) -> tf.data.Dataset:
    """Decoded images (with labels when the set has them); corrupt files are skipped.

    Args:
        cache: None caches decoded images in memory; a folder caches them in files there.
            Images given as pixels are in memory already and are not cached again.
        shard: (count, index): this input pipeline's share, every count-th image from index,
            taken before decoding, so that each worker decodes and caches only its share.
        order_seed: put the images in this seeded random order before decoding.
    """
    order = (np.random.default_rng(order_seed).permutation(len(images))
             if order_seed is not None else np.arange(len(images)))
    count, index = shard
    order = order[index::count]
    labels = images.labels[order] if images.labels is not None else None
    if images.pixels is not None:
        pixels = images.pixels[order]
        return tf.data.Dataset.from_tensor_slices(pixels if labels is None else (pixels, labels))

    def decode(path: bytes) -> tuple[np.ndarray, bool]:
        try:
            return load_rgb(path.decode(), size), True
        except ImageDecodeError as exc:
            skipped(str(exc))
            return np.zeros((size, size, 3), np.uint8), False

    def decode_tf(path: tf.Tensor, *label: tf.Tensor) -> tuple[tf.Tensor, ...]:
        # Pillow, not tf.io.decode_image: the runtime decodes with Pillow (the same rule, the
        # same pixels), and a corrupt file must become a warning, not an exception that kills
        # the epoch. Pillow releases the GIL while it decodes and resizes, so the parallel map
        # decodes on every core.
        pixels, ok = tf.numpy_function(decode, [path], (tf.uint8, tf.bool), stateful=False)
        pixels.set_shape((size, size, 3))
        return (pixels, *label, ok)

    paths = [str(images.paths[i]) for i in order]
    tensors = (paths,) if labels is None else (paths, labels)
    decoded = (tf.data.Dataset.from_tensor_slices(tensors)
               .map(decode_tf, num_parallel_calls=AUTOTUNE)
               .filter(lambda *item: item[-1])
               .map(lambda *item: item[:-1] if len(item) > 2 else item[0]))
    if cache is None:
        return decoded.cache()
    cache.mkdir(parents=True, exist_ok=True)
    return decoded.cache(str(cache / CACHE_FILE))


def steps_per_epoch(num_images: int, batch_size: int, rotations: Rotations,
                    replicas: int) -> int:
    """Global steps that show every pretext image about once (the last partial step dropped).

    A per-replica batch of `batch_size` samples holds a quarter as many images with all four
    rotations.
    """
    images = batch_size // NUM_ROTATIONS if rotations is Rotations.all else batch_size
    return max(1, num_images // (images * replicas))


@dataclass(frozen=True)
class PretextInput:
    """How one stage of pretext training reads its images, on any number of workers.

    `dataset` is the `dataset_fn` of `tf.distribute.Strategy.distribute_datasets_from_function`:
    called once per worker (input pipeline), it returns that worker's endless stream of
    per-replica batches; `steps_per_epoch` global steps make one pass over the images. With
    `accumulation` > 1 each batch arrives as that many micro-batches (Keras steps), whose
    gradients the optimizer accumulates into one update.
    """

    images: ImageSet
    size: int
    batch_size: int  # samples per replica per weight update
    rotations: Rotations
    seed: int
    replicas: int
    skipped: SkippedFiles
    cache_dirs: Callable[[int], Path | None]  # input pipeline index → its cache (None: memory)
    accumulation: int = 1

    @property
    def micro_batch(self) -> int:
        return self.batch_size // self.accumulation

    @property
    def updates_per_epoch(self) -> int:
        """Weight updates (global batches) in one pass over the images."""
        return steps_per_epoch(len(self.images), self.batch_size, self.rotations, self.replicas)

    @property
    def steps_per_epoch(self) -> int:
        """Keras steps (micro-batches): a whole number of updates."""
        return self.updates_per_epoch * self.accumulation

    @property
    def samples_per_step(self) -> int:
        return self.micro_batch * self.replicas

    def dataset(self, context: tf.distribute.InputContext) -> tf.data.Dataset:
        pipeline = context.input_pipeline_id
        shard = (context.num_input_pipelines, pipeline)
        images = image_dataset(self.images, self.size, self.skipped,
                               cache=self.cache_dirs(pipeline), shard=shard, order_seed=self.seed)
        share = -(-len(self.images) // context.num_input_pipelines)
        return pretext_train_dataset(images, self.micro_batch, self.rotations,
                                     self.seed + pipeline, share, repeat=True)


def make_augmenter(seed: int) -> keras.Sequential:
    """Random flip, zoom ±10 %, contrast ±10 %, on float pixels in [0, 255].

    The layers draw from a stateful seed generator, so the map that calls them runs one batch
    at a time: in parallel, batches take the draws in whatever order the threads run, and the
    same seed gave different augmentations, and different accuracies, from run to run. The
    augmentation is a few percent of a training step, and prefetch still overlaps it with one.
    """
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
                          seed: int, num_images: int, repeat: bool = False) -> tf.data.Dataset:
    """Shuffled, augmented, rotated batches of `batch_size` samples (uint8 images, int labels);
    endless with `repeat`, a new shuffle each pass."""
    augmenter = make_augmenter(seed)
    if rotations is Rotations.all:
        per_batch = batch_size // NUM_ROTATIONS  # all four rotations of each image together
        rotate: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]] = rotate_all
    else:
        per_batch = batch_size
        generator = tf.random.Generator.from_seed(seed)

        def rotate(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
            return rotate_random(x, generator)

    size = int(images.element_spec.shape[0])
    shuffled = images.shuffle(shuffle_buffer(num_images, size), seed=seed,
                              reshuffle_each_iteration=True)
    return ((shuffled.repeat() if repeat else shuffled)
            .batch(per_batch)
            .map(lambda x: augment_then_rotate(x, lambda b: augment(augmenter, b), rotate))
            .prefetch(AUTOTUNE))


def pretext_samples(pixels: np.ndarray, batch_size: int, rotations: Rotations,
                    seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One augmented, rotated batch of `pixels` (uint8 `[N, S, S, 3]`) for the samples picture;
    built apart from the training pipeline so that it never starts that pipeline's cache."""
    images = tf.data.Dataset.from_tensor_slices(pixels)
    x, y = next(iter(pretext_train_dataset(images, batch_size, rotations, seed, len(pixels))))
    return x.numpy(), y.numpy()


def pretext_eval_dataset(pixels: np.ndarray, batch_size: int) -> tf.data.Dataset:
    """Held-out images in all four rotations, unaugmented: the rotation accuracy we report.

    Batches are slices of `pixels` itself: `from_tensor_slices` would copy every held-out image
    into the dataset's graph, twice. Rotated batch by batch rather than cached, since four
    rotated copies would be four times the memory. Sharded by batch across workers.
    """
    size = pixels.shape[1:]

    def read(start: np.int64) -> np.ndarray:
        return pixels[start:start + batch_size]

    def batch(start: tf.Tensor) -> tf.Tensor:
        images = tf.numpy_function(read, [start], tf.uint8, stateful=False)
        images.set_shape((None, *size))
        return images

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return (tf.data.Dataset.range(0, len(pixels), batch_size).map(batch)
            .map(rotate_all, num_parallel_calls=AUTOTUNE).prefetch(AUTOTUNE)
            .with_options(options))


def labelled_train_dataset(images: tf.data.Dataset, batch_size: int, seed: int,
                           num_images: int) -> tf.data.Dataset:
    """Shuffled, augmented labelled batches for the fine-tune, without end: the labelled images
    repeat, reshuffled and re-augmented every pass, and the caller says how many steps an epoch
    takes (a few labels make a pass of one or two batches)."""
    augmenter = make_augmenter(seed + 100)
    size = int(images.element_spec[0].shape[0])
    return (images.shuffle(shuffle_buffer(num_images, size), seed=seed,
                           reshuffle_each_iteration=True)
            .repeat()
            .batch(batch_size)
            .map(lambda x, y: (augment(augmenter, x), y))
            .prefetch(AUTOTUNE))


def labelled_eval_dataset(pixels: np.ndarray, labels: np.ndarray,
                          batch_size: int) -> tf.data.Dataset:
    return (tf.data.Dataset.from_tensor_slices((pixels, labels)).batch(batch_size)
            .cache().prefetch(AUTOTUNE))
