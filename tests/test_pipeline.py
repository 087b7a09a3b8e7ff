"""tf.data pipelines: corrupt files are skipped with a warning, batches have the right shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from edge_ssl.errors import DataError  # noqa: E402
from edge_ssl.images import load_rgb  # noqa: E402
from edge_ssl.train import pipeline  # noqa: E402
from edge_ssl.train.config import Rotations  # noqa: E402
from edge_ssl.train.sources import ImageSet  # noqa: E402


@pytest.fixture()
def files(tmp_path: Path) -> list[Path]:
    paths = []
    for i in range(5):
        p = tmp_path / f"img{i}.png"
        Image.new("RGB", (40, 24), (i * 50, 0, 0)).save(p)
        paths.append(p)
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    paths.insert(2, bad)
    return paths


def test_corrupt_training_file_is_skipped_with_warning(files: list[Path]) -> None:
    skipped = pipeline.SkippedFiles()
    labels = np.arange(len(files), dtype=np.int64)
    ds = pipeline.image_dataset(ImageSet(paths=tuple(files), labels=labels), 32, skipped)
    items = [(x.numpy(), int(y.numpy())) for x, y in ds]
    assert [y for _, y in items] == [0, 1, 3, 4, 5]  # the broken file (label 2) is gone
    assert all(x.shape == (32, 32, 3) and x.dtype == np.uint8 for x, _ in items)
    assert len(skipped.messages) == 1 and "broken.jpg" in skipped.messages[0]
    # A second epoch reads the cache: the warning is not repeated.
    assert len(list(ds)) == 5 and len(skipped.messages) == 1


def test_decode_eagerly_skips_and_fails_when_nothing_is_readable(files: list[Path]) -> None:
    skipped = pipeline.SkippedFiles()
    pixels, labels = pipeline.decode_eagerly(
        ImageSet(paths=tuple(files), labels=np.arange(len(files))), 16, skipped, "val")
    assert pixels.shape == (5, 16, 16, 3) and labels is not None
    assert labels.tolist() == [0, 1, 3, 4, 5]  # the corrupt file's row and label are gone
    np.testing.assert_array_equal(pixels[2], load_rgb(files[3], 16))
    with pytest.raises(DataError, match="none of the 1 val images"):
        pipeline.decode_eagerly(ImageSet(paths=(files[2],)), 16, skipped, "val")


def test_pretext_eval_batches_are_rotated_slices_of_the_array() -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    batches = [(x.numpy(), y.numpy()) for x, y in pipeline.pretext_eval_dataset(pixels, 4)]
    assert [len(y) for _, y in batches] == [16, 16, 8]
    x, y = batches[2]  # the last, short batch: images 8 and 9 at 0°, 90°, 180°, 270°
    np.testing.assert_array_equal(x, np.concatenate([np.rot90(pixels[8:], k, axes=(1, 2))
                                                     for k in range(4)]))
    assert y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]


@pytest.mark.parametrize("rotations, per_batch", [(Rotations.all, 8), (Rotations.random, 8)])
def test_pretext_batches(rotations: Rotations, per_batch: int) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (10, 32, 32, 3), dtype=np.uint8)
    images = pipeline.image_dataset(ImageSet(pixels=pixels), 32, pipeline.SkippedFiles())
    ds = pipeline.pretext_train_dataset(images, 8, rotations, seed=0, num_images=10)
    x, y = next(iter(ds))
    assert x.shape == (per_batch, 32, 32, 3) and x.dtype == tf.uint8
    assert y.shape == (per_batch,) and set(y.numpy()) <= {0, 1, 2, 3}
    if rotations is Rotations.all:
        assert sorted(y.numpy().tolist()) == [0, 0, 1, 1, 2, 2, 3, 3]


def _epochs(dataset: tf.data.Dataset, epochs: int) -> list[np.ndarray]:
    return [x.numpy() for _ in range(epochs) for x, *_ in dataset]


def test_the_same_seed_gives_the_same_augmented_batches() -> None:
    """A study compares methods seed by seed: two runs with one seed must see the same images.
    (With the augmentation mapped in parallel, no two of four runs agreed.)"""
    pixels = np.random.default_rng(0).integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(200) % 2

    def labelled(seed: int) -> list[np.ndarray]:
        images = tf.data.Dataset.from_tensor_slices((pixels, labels)).cache()
        # Endless: three passes over the 200 images are 19 batches of 32.
        return _epochs(pipeline.labelled_train_dataset(images, 32, seed, 200).take(19), 1)

    def pretext(seed: int) -> list[np.ndarray]:
        images = tf.data.Dataset.from_tensor_slices(pixels).cache()
        return _epochs(pipeline.pretext_train_dataset(images, 32, Rotations.all, seed, 200), 2)

    for batches in (labelled, pretext):
        first, again, other = batches(0), batches(0), batches(1)
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(a, b)
        assert any(not np.array_equal(a, b) for a, b in zip(first, other, strict=True))


def test_shuffle_buffer_is_bounded_in_bytes() -> None:
    assert pipeline.shuffle_buffer(100, 64) == 100  # a small set is shuffled whole
    big = pipeline.shuffle_buffer(10**6, 224)
    assert big * pipeline.image_bytes(224) <= pipeline.SHUFFLE_BUFFER_BYTES < (
        (big + 1) * pipeline.image_bytes(224))
    assert pipeline.shuffle_buffer(10**6, 64) > big  # smaller images, more of them


def test_disk_cache_holds_the_decoded_images(files: list[Path], tmp_path: Path) -> None:
    skipped = pipeline.SkippedFiles()
    cache = tmp_path / "cache"
    labels = np.arange(len(files), dtype=np.int64)
    ds = pipeline.image_dataset(ImageSet(paths=tuple(files), labels=labels), 32, skipped,
                                cache=cache)
    first = [(x.numpy(), int(y.numpy())) for x, y in ds]
    assert [y for _, y in first] == [0, 1, 3, 4, 5]
    assert (cache / f"{pipeline.CACHE_FILE}.index").is_file()
    for f in files:  # the second pass reads the cache files, not the images
        f.unlink()
    second = [(x.numpy(), int(y.numpy())) for x, y in ds]
    assert [y for _, y in second] == [0, 1, 3, 4, 5] and len(skipped.messages) == 1
    assert all(np.array_equal(a, b) for (a, _), (b, _) in zip(first, second, strict=True))


def test_shards_split_the_images_between_workers() -> None:
    pixels = np.arange(20, dtype=np.uint8)[:, None, None, None] * np.ones((1, 32, 32, 3),
                                                                          np.uint8)
    images = ImageSet(pixels=pixels)
    seen = [sorted(int(x.numpy()[0, 0, 0]) for x in pipeline.image_dataset(
        images, 32, pipeline.SkippedFiles(), shard=(2, index), order_seed=3))
        for index in range(2)]
    assert len(seen[0]) == len(seen[1]) == 10
    assert not set(seen[0]) & set(seen[1]) and sorted(seen[0] + seen[1]) == list(range(20))
    # The seeded order puts the images in a random order before they are split.
    assert seen[0] != list(range(0, 20, 2))


@pytest.mark.parametrize("rotations", [Rotations.all, Rotations.random])
def test_pretext_input_gives_each_worker_endless_per_replica_batches(
        rotations: Rotations) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    source = pipeline.PretextInput(ImageSet(pixels=pixels), 32, 8, rotations, seed=0,
                                   replicas=4, skipped=pipeline.SkippedFiles(),
                                   cache_dirs=lambda _: None)
    images_per_step = 4 * (2 if rotations is Rotations.all else 8)
    assert source.steps_per_epoch == 40 // images_per_step and source.samples_per_step == 32
    context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1,
                                         num_replicas_in_sync=4)
    batches = list(source.dataset(context).take(30))  # more than a pass: it repeats
    assert all(x.shape == (8, 32, 32, 3) and y.shape == (8,) for x, y in batches)
