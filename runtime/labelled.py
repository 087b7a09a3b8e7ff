"""The labelled images `edge-ssl evaluate` measures on, each matched by name to a model label.

A class-per-folder tree (`DIR/<class>/*.jpg`, `unlabeled/` skipped) gives every class folder;
a Tiny ImageNet folder gives the `val/` images of the classes the model knows, a wnid matched by
itself or by its names in `words.txt`, as training labels them.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from edge_ssl import datasets
from edge_ssl.errors import DataError
from edge_ssl.images import IMAGE_EXTENSIONS, list_images


@dataclass(frozen=True)
class LabelledImages:
    """Image files and the model label each one truly is."""

    root: Path
    kind: str  # "folder" | "tiny-imagenet"
    paths: tuple[Path, ...]
    truths: tuple[str, ...]  # one model label per path
    sources: dict[str, str]  # model label → the folder or wnid it came from


def find_labelled(root: Path, labels: Sequence[str], classes: Sequence[str] = ()
                  ) -> LabelledImages:
    """The labelled images of `root`, for a model with `labels`.

    Args:
        classes: only these classes (folder names, wnids or model labels); default all.

    Raises:
        DataError: `root` is not a labelled folder, has no images, or holds a class the model
            does not know, naming it and the labels the model has.
    """
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; pass --data a class-per-folder tree "
                        "(DIR/<class>/*.jpg) or a Tiny ImageNet folder.")
    found = (_tiny_imagenet(root, labels, classes) if datasets.is_tiny_imagenet(root)
             else _folder(root, labels, classes))
    if not found.paths:
        raise DataError(f"{root}: no labelled images (looked for "
                        f"{', '.join(sorted(IMAGE_EXTENSIONS))} in its class folders).")
    return found


def _folder(root: Path, labels: Sequence[str], classes: Sequence[str]) -> LabelledImages:
    folders = datasets.class_folders(root)
    if not folders:
        raise DataError(f"{root}: no class folders; expected {root}/<class>/*.jpg "
                        "(or a Tiny ImageNet folder with wnids.txt).")
    chosen = list(classes) or list(folders)
    missing = [c for c in chosen if c not in folders]
    if missing:
        raise DataError(f"{root}: no class folder {', '.join(map(repr, missing))}; it has "
                        f"{', '.join(folders)}.")
    unknown = [name for name in chosen if name not in labels]
    if unknown:
        raise DataError(_unknown(root, unknown, labels))
    paths: list[Path] = []
    truths: list[str] = []
    for name in chosen:
        files = list_images(folders[name])
        paths += files
        truths += [name] * len(files)
    return LabelledImages(root, "folder", tuple(paths), tuple(truths),
                          {name: str(folders[name]) for name in chosen})


def _tiny_imagenet(root: Path, labels: Sequence[str], classes: Sequence[str]
                   ) -> LabelledImages:
    if not (root / datasets.VAL_ANNOTATIONS).is_file():
        raise DataError(f"{root / datasets.VAL_ANNOTATIONS}: missing; a Tiny ImageNet folder "
                        "is evaluated on its val/ images, listed there.")
    words = datasets.read_words(root / datasets.WORDS_FILE)
    names = {wnid: {wnid, *(n.strip() for n in words.get(wnid, "").split(",") if n.strip())}
             for wnid in datasets.read_wnids(root)}
    label_of = {}  # wnid → model label
    for label in labels:
        matches = [w for w in names if label == w or label == datasets.short_name(w, words)]
        matches = matches or [w for w, known in names.items() if label in known]
        if len(matches) == 1:
            label_of[matches[0]] = label
    if classes:
        chosen = [_wnid(c, names, label_of) for c in classes]
        unknown = [f"{c} ({w})" for c, w in zip(classes, chosen, strict=True)
                   if w not in label_of]
        if unknown:
            raise DataError(_unknown(root, unknown, labels))
        label_of = {w: label_of[w] for w in chosen}
    if not label_of:
        raise DataError(f"{root}: none of the model's labels ({', '.join(labels)}) names a "
                        "class of this Tiny ImageNet folder; evaluate a model trained on it "
                        f"(edge-ssl train --data {root}).")
    pairs = [(path, label_of[wnid]) for path, wnid in datasets.val_annotations(root)
             if wnid in label_of]
    return LabelledImages(root, "tiny-imagenet", tuple(p for p, _ in pairs),
                          tuple(t for _, t in pairs),
                          {label: wnid for wnid, label in label_of.items()})


def _wnid(name: str, names: dict[str, set[str]], label_of: dict[str, str]) -> str:
    by_label = [w for w, label in label_of.items() if label == name]
    matches = by_label or [w for w, known in names.items() if name in known]
    if len(matches) != 1:
        problem = "names several classes" if matches else "is not a class of this folder"
        raise DataError(f"--classes {name!r} {problem}; pass wnids from wnids.txt.")
    return matches[0]


def _unknown(root: Path, unknown: Sequence[str], labels: Sequence[str]) -> str:
    close = [m for name in unknown for m in difflib.get_close_matches(name, labels, n=1)]
    hint = f" (did you mean {', '.join(map(repr, close))}?)" if close else ""
    which = (f"class {unknown[0]!r} is not one" if len(unknown) == 1 else
             f"classes {', '.join(map(repr, unknown))} are not")
    return (f"{root}: {which} of the model's labels ({', '.join(labels)}){hint}; evaluate a "
            "model trained on these classes, or pass --classes with the ones it knows.")
