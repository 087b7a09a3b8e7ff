"""Data sources: the demo scenes, Tiny ImageNet, and class-per-folder trees.

A source resolves *which* images play which part (pretext, labelled training, test); the pixels
are decoded later by the tf.data pipeline, through edge_ssl.images. Test images (Tiny ImageNet's
official val, a folder's held-out split, separately drawn demo scenes) are measured once at the
end; every choice during training uses a selection split carved from the labelled training images.
"""

from __future__ import annotations

import difflib
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_ssl import datasets
from edge_ssl.datasets import UNLABELED_FOLDER, read_words, short_name
from edge_ssl.errors import DataError
from edge_ssl.images import list_images
from edge_ssl.train.config import TrainConfig

DEFAULT_TINY_IMAGENET_CLASSES = ("n01855672", "n01443537")  # goose ("duck"), goldfish ("fish")
FOLDER_TEST_FRACTION = 0.2
PRETEXT_VAL_FRACTION = 0.1  # a held-out 10 % of the unlabeled images validates the pretext


@dataclass(frozen=True)
class ImageSet:
    """Images as file paths or as decoded pixels (`uint8 [N, S, S, 3]`), with optional labels."""

    paths: tuple[Path, ...] = ()
    pixels: np.ndarray | None = None
    labels: np.ndarray | None = None  # int64 [N]

    def __len__(self) -> int:
        return len(self.pixels) if self.pixels is not None else len(self.paths)

    def take(self, indices: Sequence[int] | np.ndarray) -> ImageSet:
        idx = np.asarray(indices, dtype=np.int64)
        return ImageSet(
            paths=tuple(self.paths[i] for i in idx) if self.pixels is None else (),
            pixels=self.pixels[idx] if self.pixels is not None else None,
            labels=self.labels[idx] if self.labels is not None else None,
        )

    def unlabeled(self) -> ImageSet:
        return ImageSet(paths=self.paths, pixels=self.pixels)


@dataclass(frozen=True)
class Source:
    """What one run trains on: images for both stages and the class names in output order."""

    kind: str  # "demo" | "tiny-imagenet" | "folder"
    labels: tuple[str, ...]
    pretext: ImageSet  # unlabeled, before the 10 % hold-out
    train: ImageSet  # labelled, for the fine-tune (a selection split may be carved from it)
    test: ImageSet  # labelled, held out: measured once at the end, never used for a choice
    notes: tuple[str, ...] = field(default=())
    # The task's images without labels, for a rotation loss during the fine-tune: the training
    # images of its classes that --labels-per-class left out, and a folder's unlabeled images.
    spare: ImageSet = field(default_factory=ImageSet)

    def summary(self) -> dict[str, object]:
        counts = np.bincount(self.train.labels, minlength=len(self.labels))  # type: ignore[arg-type]
        return {
            "kind": self.kind,
            "labels": list(self.labels),
            "pretext_images": len(self.pretext),
            "train_images_per_class": dict(zip(self.labels, counts.tolist(), strict=True)),
            "test_images": len(self.test),
        }


def load_source(config: TrainConfig) -> Source:
    """Resolve the configured data into a Source, or raise DataError saying what to fix."""
    if config.data is None:
        source = _demo(config)
    else:
        root = config.data
        if not root.exists():
            raise DataError(f"{root}: no such folder; pass --data with a Tiny ImageNet or "
                            "class-per-folder directory, or omit it for the demo data.")
        if not root.is_dir():
            raise DataError(f"{root}: not a folder; --data takes a directory of images.")
        source = (_tiny_imagenet(config, root) if datasets.is_tiny_imagenet(root)
                      else _folder(config, root))
    if config.labels_per_class is not None:
        source = _limit_labels(source, config.labels_per_class, config.seed)
    return source


def split_pretext(images: ImageSet, seed: int) -> tuple[ImageSet, ImageSet]:
    """(train, held-out) with PRETEXT_VAL_FRACTION held out, at least one image each side."""
    if len(images) < 2:
        raise DataError(f"the pretext needs at least 2 images; found {len(images)}.")
    order = np.random.default_rng(seed).permutation(len(images))
    n_val = min(max(1, round(len(images) * PRETEXT_VAL_FRACTION)), len(images) - 1)
    return images.take(order[n_val:]), images.take(order[:n_val])


def split_selection(train: ImageSet, fraction: float, seed: int) -> tuple[ImageSet, ImageSet]:
    """(fit, selection): `fraction` of each class's labelled images (seeded, at least one when the
    class has two or more) become the selection split that early stopping and the LR schedule
    watch. Stratified, so a small split still holds every class."""
    labels = np.asarray(train.labels)
    rng = np.random.default_rng(seed + 2)
    fit: list[int] = []
    selection: list[int] = []
    for index in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == index))
        n_selection = min(max(1, round(len(members) * fraction)), len(members) - 1)
        selection += members[:n_selection].tolist()
        fit += members[n_selection:].tolist()
    return train.take(sorted(fit)), train.take(sorted(selection))


def _demo(config: TrainConfig) -> Source:
    from edge_ssl.train import demo_data

    n = config.demo_per_class
    # Distinct derived seeds: test scenes are never copies of training scenes.
    train_px, train_y = demo_data.generate(n, seed=config.seed, image_size=config.image_size)
    test_px, test_y = demo_data.generate(max(1, n // 4), seed=config.seed + 10_007,
                                         image_size=config.image_size)
    train = ImageSet(pixels=train_px, labels=train_y)
    return Source("demo", tuple(demo_data.CLASSES), train.unlabeled(), train,
                  ImageSet(pixels=test_px, labels=test_y))


def _tiny_imagenet(config: TrainConfig, root: Path) -> Source:
    wnids = datasets.read_wnids(root)
    if not wnids:
        raise DataError(f"{root / datasets.WNIDS_FILE} lists no classes; is this Tiny ImageNet?")
    annotations = root / datasets.VAL_ANNOTATIONS
    if not annotations.is_file():
        raise DataError(f"{annotations}: missing; a Tiny ImageNet folder needs its val/ "
                        "annotations: its images are the test set of the fine-tune.")
    words = read_words(root / datasets.WORDS_FILE)
    chosen = [_resolve_class(c, wnids, words) for c in
              (config.classes or DEFAULT_TINY_IMAGENET_CLASSES)]
    _check_class_count(chosen)

    def images_of(wnid: str) -> list[Path]:
        return list_images(root / "train" / wnid / "images")

    pretext_wnids = wnids[: config.pretext_classes] if config.pretext_classes else wnids
    pretext = [p for w in pretext_wnids for p in images_of(w)]
    train_paths: list[Path] = []
    train_labels: list[int] = []
    for index, wnid in enumerate(chosen):
        files = images_of(wnid)
        if not files:
            raise DataError(f"{root / 'train' / wnid / 'images'}: class {wnid} has no images.")
        train_paths += files
        train_labels += [index] * len(files)
    test_paths: list[Path] = []
    test_labels: list[int] = []
    for path, wnid in datasets.val_annotations(root):
        if wnid in chosen:
            test_paths.append(path)
            test_labels.append(chosen.index(wnid))
    for index, wnid in enumerate(chosen):
        if index not in test_labels:
            raise DataError(f"{annotations}: no validation images of class {wnid}.")
    labels = tuple(short_name(w, words) for w in chosen)
    return Source(
        "tiny-imagenet", labels, ImageSet(paths=tuple(pretext)),
        ImageSet(paths=tuple(train_paths), labels=np.array(train_labels, np.int64)),
        ImageSet(paths=tuple(test_paths), labels=np.array(test_labels, np.int64)),
        notes=tuple(f"{n} = {w} ({words.get(w, '?')})" for n, w in zip(labels, chosen,
                                                                     strict=True)),
    )


def _folder(config: TrainConfig, root: Path) -> Source:
    # A subfolder named "unlabeled" (as `edge-ssl demo-data` writes) is pretext-only, never a class.
    unlabeled_dirs = [d for d in (config.unlabeled, root / UNLABELED_FOLDER)
                      if d is not None and d.is_dir()]
    if config.unlabeled is not None and not config.unlabeled.is_dir():
        raise DataError(f"{config.unlabeled}: no such folder for --unlabeled.")
    folders = datasets.class_folders(root, {d.resolve() for d in unlabeled_dirs})
    if not folders:
        raise DataError(f"{root}: no class folders; expected {root}/<class>/*.jpg "
                        "(or a Tiny ImageNet folder with wnids.txt).")
    names = [_resolve_class(c, list(folders), {}) for c in config.classes] if config.classes \
        else list(folders)
    _check_class_count(names)
    train_paths: list[Path] = []
    train_labels: list[int] = []
    test_paths: list[Path] = []
    test_labels: list[int] = []
    for index, name in enumerate(names):
        files = list_images(folders[name])
        if not files:
            raise DataError(f"{folders[name]}: class {name!r} has no images "
                            "(.jpg, .jpeg, .png, .bmp, .webp, .gif, .tif).")
        if len(files) < 2:
            raise DataError(f"{folders[name]}: class {name!r} has 1 image; it needs at least 2 "
                            "(one to train on, one to test on).")
        test, train = _held_out(files, name)
        test_paths += test
        test_labels += [index] * len(test)
        train_paths += train
        train_labels += [index] * len(train)
    pretext = list(train_paths)
    for folder in dict.fromkeys(d.resolve() for d in unlabeled_dirs):
        extra = list_images(folder, recursive=True)
        if not extra and config.unlabeled is not None:
            raise DataError(f"{folder}: the unlabeled folder holds no images.")
        pretext += extra
    return Source(
        "folder", tuple(names), ImageSet(paths=tuple(pretext)),
        ImageSet(paths=tuple(train_paths), labels=np.array(train_labels, np.int64)),
        ImageSet(paths=tuple(test_paths), labels=np.array(test_labels, np.int64)),
        spare=ImageSet(paths=tuple(pretext[len(train_paths):])),
    )


def _held_out(files: list[Path], name: str) -> tuple[list[Path], list[Path]]:
    """(test, train) files of class `name`: FOLDER_TEST_FRACTION of them, at least one each side.

    The split depends only on the class's own files: each file gets a key hashed from the class
    and its name, and the files with the smallest keys are held out. Every run, `finetune` and
    `study` of the folder, whatever classes it names and whatever its --seed, therefore holds
    out the same images of a class: one's test images are never another's pretext images, and
    seeds compare on the same test images. A file added later leaves the others where they were.
    """
    def key(path: Path) -> bytes:
        return hashlib.sha256(f"{name}/{path.name}".encode()).digest()

    ranked = sorted(files, key=key)
    n_test = min(max(1, round(len(files) * FOLDER_TEST_FRACTION)), len(files) - 1)
    held = set(ranked[:n_test])
    return [f for f in files if f in held], [f for f in files if f not in held]


def _limit_labels(source: Source, per_class: int, seed: int) -> Source:
    """Keep `per_class` labelled training images of each class (seeded), to study scarcity."""
    labels = np.asarray(source.train.labels)
    rng = np.random.default_rng(seed + 1)
    keep: list[int] = []
    notes = list(source.notes)
    for index, name in enumerate(source.labels):
        members = np.flatnonzero(labels == index)
        if len(members) < per_class:
            notes.append(f"class {name!r} has only {len(members)} labelled images, "
                         f"fewer than --labels-per-class {per_class}; using all of them")
        keep += rng.permutation(members)[:per_class].tolist()
    left_out = source.train.take(np.setdiff1d(np.arange(len(labels)), keep)).unlabeled()
    # A source holds its images either as files or as pixels (the demo), never both.
    spare = (left_out if not len(source.spare) else
             ImageSet(paths=left_out.paths + source.spare.paths) if left_out.pixels is None
             else ImageSet(pixels=np.concatenate([left_out.pixels, source.spare.pixels])))
    return Source(source.kind, source.labels, source.pretext, source.train.take(sorted(keep)),
                  source.test, tuple(notes), spare)


def _resolve_class(name: str, known: list[str], words: dict[str, str]) -> str:
    """A class given by id/folder name, or by a word of words.txt; unknown names get suggestions."""
    if name in known:
        return name
    wanted = name.strip().lower()
    matches = [w for w in known
               if wanted in (n.strip().lower() for n in words.get(w, "").split(","))]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise DataError(f"class {name!r} is ambiguous: it names {', '.join(matches)}; "
                        "pass one of these ids instead.")
    vocabulary = known + [n.strip() for w in known for n in words.get(w, "").split(",") if n]
    close = difflib.get_close_matches(name, vocabulary, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}?" if close else \
        f"known classes: {', '.join(known[:10])}{' ...' if len(known) > 10 else ''}."
    raise DataError(f"unknown class {name!r}; {hint}")


def _check_class_count(names: Sequence[str]) -> None:
    if len(names) < 2:
        raise DataError(f"a classifier needs at least two classes; got {len(names)} "
                        f"({', '.join(names) or 'none'}). Pass --classes A,B or add class folders.")
    if len(set(names)) != len(names):
        raise DataError(f"--classes lists a class twice: {', '.join(names)}.")
