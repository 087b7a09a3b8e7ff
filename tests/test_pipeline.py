"""tf.data pipelines: corrupt files are skipped with a warning, batches have the right shape."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

tf = pytest.importorskip("tensorflow")

from edge_ssl.errors import DataError  # noqa: E402
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
        ImageSet(paths=tuple(files), labels=np.zeros(len(files), np.int64)), 16, skipped, "val")
    assert pixels.shape == (5, 16, 16, 3) and labels is not None and len(labels) == 5
    with pytest.raises(DataError, match="none of the 1 val images"):
        pipeline.decode_eagerly(ImageSet(paths=(files[2],)), 16, skipped, "val")


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
