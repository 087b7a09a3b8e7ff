"""The built-in demo dataset: deterministic, balanced, upright, not guessable from colour."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from edge_ssl.errors import DataError
from edge_ssl.train.demo_data import CLASSES, generate, write


@pytest.fixture(scope="module")
def demo_800() -> tuple[np.ndarray, np.ndarray]:
    return generate(400, seed=7)


def _nearest_centroid_accuracy(features: np.ndarray, labels: np.ndarray,
                               train: np.ndarray) -> float:
    """Fit one centroid per label on `train` rows, return accuracy on the other rows."""
    classes = np.unique(labels)
    centroids = np.stack([features[train & (labels == k)].mean(0) for k in classes])
    distances = ((features[~train][:, None, :] - centroids[None]) ** 2).sum(-1)
    return float((classes[distances.argmin(1)] == labels[~train]).mean())


def test_shapes_dtypes_and_balance() -> None:
    images, labels = generate(6, seed=0, image_size=48)
    assert CLASSES == ("duck", "fish")
    assert images.shape == (12, 48, 48, 3) and images.dtype == np.uint8
    assert labels.shape == (12,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [6, 6]
    assert 0 < labels[:6].sum() < 6, "classes are shuffled, not in two blocks"
    assert images.std() > 20, "scenes have contrast"


def test_same_seed_same_bytes_other_seed_other_images() -> None:
    a_images, a_labels = generate(5, seed=3)
    b_images, b_labels = generate(5, seed=3)
    c_images, _ = generate(5, seed=4)
    assert a_images.tobytes() == b_images.tobytes()
    assert np.array_equal(a_labels, b_labels)
    assert np.abs(a_images.astype(int) - c_images.astype(int)).mean() > 10


def test_images_within_a_set_differ() -> None:
    images, _ = generate(10, seed=1)
    flat = images.reshape(len(images), -1).astype(np.int64)
    gaps = np.abs(flat[:, None, :] - flat[None, :, :]).mean(-1)
    assert gaps[~np.eye(len(images), dtype=bool)].min() > 5


def test_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="n_per_class"):
        generate(0, seed=0)
    with pytest.raises(ValueError, match="image_size"):
        generate(1, seed=0, image_size=8)


def test_mean_colour_does_not_give_the_class_away(demo_800: tuple[np.ndarray, np.ndarray]) -> None:
    images, labels = demo_800
    mean_rgb = images.reshape(len(images), -1, 3).mean(1)
    accuracy = _nearest_centroid_accuracy(mean_rgb, labels, np.arange(len(images)) < 400)
    assert accuracy < 0.7


def test_upright_orientation_is_visible(demo_800: tuple[np.ndarray, np.ndarray]) -> None:
    images, _ = demo_800
    grey = images.astype(np.float32).mean(-1)  # [N, 64, 64]
    # Light from above: the top quarter is brighter than the bottom quarter.
    assert (grey[:, :16].mean((1, 2)) > grey[:, -16:].mean((1, 2))).mean() > 0.9
    # A nearest-centroid rotation predictor on 8x8 thumbnails beats chance (0.25) by far.
    thumbs = grey.reshape(len(grey), 8, 8, 8, 8).mean((2, 4))
    rotated = np.concatenate([np.rot90(thumbs, k, axes=(1, 2)) for k in range(4)])
    rotation = np.repeat(np.arange(4), len(thumbs))
    train = np.tile(np.arange(len(thumbs)) < 400, 4)
    assert _nearest_centroid_accuracy(rotated.reshape(len(rotated), -1), rotation, train) > 0.8


def test_write_tree(tmp_path: Path) -> None:
    counts = write(tmp_path / "d", 3, seed=0, image_size=32, unlabeled=5)
    assert counts == {"duck": 3, "fish": 3, "unlabeled": 5}
    for name, count in counts.items():
        files = sorted((tmp_path / "d" / name).iterdir())
        assert [f.name for f in files] == [f"{name}_{i:04d}.png" for i in range(count)]
        with Image.open(files[0]) as image:
            assert image.size == (32, 32) and image.mode == "RGB"
    images, labels = generate(3, seed=0, image_size=32)
    with Image.open(tmp_path / "d" / "fish" / "fish_0000.png") as image:
        assert np.array_equal(np.asarray(image), images[labels == 1][0]), "PNG is lossless"
    with Image.open(tmp_path / "d" / "unlabeled" / "unlabeled_0000.png") as image:
        unlabeled = np.asarray(image)
    assert not any(np.array_equal(unlabeled, labelled) for labelled in images)


def test_write_refuses_non_empty_folder_unless_overwrite(tmp_path: Path) -> None:
    write(tmp_path, 4, seed=0, image_size=16)
    with pytest.raises(DataError, match="--overwrite"):
        write(tmp_path, 2, seed=1, image_size=16)
    (tmp_path / "mine.txt").write_text("keep")
    counts = write(tmp_path, 2, seed=1, image_size=16, overwrite=True)
    assert counts == {"duck": 2, "fish": 2}
    # A smaller rerun leaves no stale images behind, and files that are not ours stay.
    assert len(list((tmp_path / "duck").glob("*.png"))) == 2
    assert (tmp_path / "mine.txt").read_text() == "keep"
    with pytest.raises(DataError, match="is a file"):
        write(tmp_path / "mine.txt", 1, seed=0)


def test_cli_writes_then_refuses_without_overwrite(tmp_path: Path) -> None:
    from edge_ssl.cli import app

    runner = CliRunner()
    target = tmp_path / "d"
    args = ["demo-data", str(target), "--per-class", "5", "--unlabeled", "4", "--image-size", "32"]
    first = runner.invoke(app, args)
    assert first.exit_code == 0, first.output
    assert len(list((target / "duck").glob("*.png"))) == 5
    assert len(list((target / "unlabeled").glob("*.png"))) == 4
    assert f"--unlabeled {target / 'unlabeled'}" in first.output
    assert f"classify {target / 'duck'}" in first.output
    second = runner.invoke(app, args)
    assert second.exit_code != 0
    assert "--overwrite" in second.output
    third = runner.invoke(app, [*args, "--overwrite"])
    assert third.exit_code == 0, third.output
