"""Data sources: class folders, Tiny ImageNet layout (generated and real), and their errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edge_ssl.errors import DataError
from edge_ssl.train.config import TrainConfig
from edge_ssl.train.sources import load_source, split_pretext


def _png(path: Path, colour: tuple[int, int, int], size: tuple[int, int] = (20, 20),
         mode: str = "RGB") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).convert(mode).save(path)


@pytest.fixture()
def folder_tree(tmp_path: Path) -> Path:
    root = tmp_path / "pets"
    for i in range(5):
        _png(root / "cat" / f"c{i}.png", (200, 10, 10))
        _png(root / "dog" / f"d{i}.jpg", (10, 10, 200), size=(31, 17))  # odd size
    _png(root / "dog" / "grey.png", (90, 90, 90), mode="L")  # greyscale
    for i in range(3):
        _png(root / "unlabeled" / f"u{i}.png", (0, 200, 0))
    (root / "cat" / "notes.txt").write_text("not an image")
    return root


def _tiny(tmp_path: Path, wnids: list[str], words: dict[str, str], per_class: int = 4,
          val_per_class: int = 2, annotations: bool = True) -> Path:
    root = tmp_path / "tiny"
    root.mkdir()
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in words.items()))
    lines = []
    for c, wnid in enumerate(wnids):
        for k in range(per_class):
            _png(root / "train" / wnid / "images" / f"{wnid}_{k}.JPEG", (c * 40, 0, 0),
                 size=(64, 64))
        for k in range(val_per_class):
            name = f"val_{c}_{k}.JPEG"
            _png(root / "val" / "images" / name, (c * 40, 0, 0), size=(64, 64))
            lines.append(f"{name}\t{wnid}\t0\t0\t10\t10")
    if annotations:
        (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return root


WNIDS = ["n01443537", "n01855672", "n02124075"]
WORDS = {"n01443537": "goldfish, Carassius auratus", "n01855672": "goose",
         "n02124075": "Egyptian cat"}


def test_folder_source_splits_classes_and_adds_unlabeled(folder_tree: Path) -> None:
    source = load_source(TrainConfig(data=folder_tree))
    assert source.kind == "folder"
    assert source.labels == ("cat", "dog")  # "unlabeled" is never a class
    assert len(source.train) + len(source.test) == 11  # the .txt file is ignored
    assert set(np.unique(source.test.labels)) == {0, 1}
    assert len(source.pretext) == len(source.train) + 3
    assert not set(source.test.paths) & set(source.pretext.paths)


def test_folder_source_respects_classes_and_labels_per_class(folder_tree: Path) -> None:
    source = load_source(TrainConfig(data=folder_tree, classes=("dog", "cat"),
                                     labels_per_class=2))
    assert source.labels == ("dog", "cat")
    assert np.bincount(source.train.labels).tolist() == [2, 2]
    again = load_source(TrainConfig(data=folder_tree, classes=("dog", "cat"),
                                    labels_per_class=2))
    assert again.train.paths == source.train.paths  # seeded


def test_the_tasks_spare_images_are_its_unlabelled_training_images(folder_tree: Path) -> None:
    """What a rotation loss may use during the fine-tune: the training images whose labels
    --labels-per-class set aside and the unlabeled folder, never a test image."""
    every = load_source(TrainConfig(data=folder_tree))
    assert {p.name for p in every.spare.paths} == {"u0.png", "u1.png", "u2.png"}
    source = load_source(TrainConfig(data=folder_tree, labels_per_class=2))
    spare = set(source.spare.paths)
    assert source.spare.labels is None and len(spare) == len(source.spare)
    assert spare == (set(every.train.paths) - set(source.train.paths)) | set(every.spare.paths)
    assert not spare & set(source.test.paths)
    demo = load_source(TrainConfig(demo_per_class=6, image_size=32, labels_per_class=2))
    assert demo.spare.pixels is not None and len(demo.spare) == 2 * 6 - 4


def test_unknown_class_suggests_closest(folder_tree: Path) -> None:
    with pytest.raises(DataError, match=r"unknown class 'dgo'.*'dog'"):
        load_source(TrainConfig(data=folder_tree, classes=("cat", "dgo")))


@pytest.mark.parametrize("make, message", [
    (lambda root: None, "no such folder"),
    (lambda root: root.mkdir(), "no class folders"),
    (lambda root: (_png(root / "a" / "x.png", (1, 2, 3)), _png(root / "a" / "y.png", (1, 2, 3))),
     "at least two classes"),
    (lambda root: (_png(root / "a" / "x.png", (1, 2, 3)), _png(root / "a" / "y.png", (1, 2, 3)),
                   (root / "b").mkdir()), "class 'b' has no images"),
])
def test_folder_errors(tmp_path: Path, make: object, message: str) -> None:
    root = tmp_path / "data"
    make(root)  # type: ignore[operator]
    with pytest.raises(DataError, match=message):
        load_source(TrainConfig(data=root))


def test_tiny_imagenet_by_wnid_and_word(tmp_path: Path) -> None:
    root = _tiny(tmp_path, WNIDS, WORDS)
    source = load_source(TrainConfig(data=root, classes=("goose", "n01443537")))
    assert source.kind == "tiny-imagenet"
    assert source.labels == ("goose", "goldfish")
    assert len(source.pretext) == 12  # every class, labels ignored
    assert np.bincount(source.train.labels).tolist() == [4, 4]
    assert np.bincount(source.test.labels).tolist() == [2, 2]
    assert all("val/images" in str(p) for p in source.test.paths)
    limited = load_source(TrainConfig(data=root, pretext_classes=1))
    assert len(limited.pretext) == 4


def test_tiny_imagenet_errors(tmp_path: Path) -> None:
    root = _tiny(tmp_path, WNIDS, WORDS, annotations=False)
    with pytest.raises(DataError, match="val_annotations.txt: missing"):
        load_source(TrainConfig(data=root))
    (root / "val" / "val_annotations.txt").write_text("")
    with pytest.raises(DataError, match=r"unknown class 'golfish'.*goldfish"):
        load_source(TrainConfig(data=root, classes=("golfish", "goose")))
    with pytest.raises(DataError, match="at least two classes"):
        load_source(TrainConfig(data=root, classes=("goose",)))


def test_real_tiny_imagenet_mini(tiny_imagenet_mini: Path) -> None:
    source = load_source(TrainConfig(data=tiny_imagenet_mini))
    assert source.labels == ("goose", "goldfish")
    assert len(source.pretext) == 600
    assert np.bincount(source.train.labels).tolist() == [60, 60]
    assert np.bincount(source.test.labels).tolist() == [12, 12]
    train, val = split_pretext(source.pretext, seed=0)
    assert (len(train), len(val)) == (540, 60)


def test_demo_source_is_deterministic() -> None:
    a = load_source(TrainConfig(demo_per_class=6, image_size=32))
    b = load_source(TrainConfig(demo_per_class=6, image_size=32))
    assert a.labels == ("duck", "fish")
    assert a.train.pixels is not None and a.train.pixels.shape == (12, 32, 32, 3)
    np.testing.assert_array_equal(a.train.pixels, b.train.pixels)
    assert not np.array_equal(a.test.pixels[:2], a.train.pixels[:2])  # type: ignore[index]


def test_a_class_holds_out_the_same_images_whichever_classes_are_named(tmp_path: Path) -> None:
    """A run on a,b,c and a later study (or finetune, with any seed) on b,c: no test image of the
    study was a pretext image of the run, because each class's split depends only on its files."""
    root = tmp_path / "folders"
    for c, name in enumerate("abc"):
        for k in range(10):
            _png(root / name / f"{name}{k}.png", (c * 60, k * 20, 0))
    run = load_source(TrainConfig(data=root, classes=("a", "b", "c")))
    study = load_source(TrainConfig(data=root, classes=("b", "c")))
    assert set(study.test.paths) <= set(run.test.paths)
    assert not set(study.test.paths) & set(run.pretext.paths)
    other_seed = load_source(TrainConfig(data=root, classes=("b", "c"), seed=1))
    assert set(other_seed.test.paths) == set(study.test.paths)  # a finetune with another seed
    (root / "b" / "b10.png").write_bytes((root / "b" / "b0.png").read_bytes())
    grown = load_source(TrainConfig(data=root, classes=("b", "c")))
    kept = set(study.test.paths) - set(grown.test.paths)
    assert len(kept) <= 1  # a new file moves at most the one image it displaces
