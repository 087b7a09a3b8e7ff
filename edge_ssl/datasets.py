"""How edge-ssl reads labelled image folders, shared by training and `edge-ssl evaluate`.

A Tiny ImageNet folder is recognised by its `wnids.txt`; its classes are WordNet ids, shown by
the first name `words.txt` gives them (n01443537 → goldfish), and its labelled held-out images
are `val/images/*` listed in `val/val_annotations.txt`. Any other folder is class-per-folder:
`DIR/<class>/*.jpg`, where a subfolder named `unlabeled` holds pretext-only images.
"""

from __future__ import annotations

from pathlib import Path

WNIDS_FILE = "wnids.txt"
WORDS_FILE = "words.txt"
VAL_ANNOTATIONS = Path("val", "val_annotations.txt")
VAL_IMAGES = Path("val", "images")
UNLABELED_FOLDER = "unlabeled"


def is_tiny_imagenet(root: Path) -> bool:
    return (root / WNIDS_FILE).is_file()


def read_wnids(root: Path) -> list[str]:
    return [w for w in (root / WNIDS_FILE).read_text().split() if w]


def read_words(path: Path) -> dict[str, str]:
    """wnid → its comma-separated names, from a `words.txt` (empty when there is none)."""
    if not path.is_file():
        return {}
    pairs = (line.split("\t", 1) for line in path.read_text().splitlines() if "\t" in line)
    return {wnid.strip(): names.strip() for wnid, names in pairs}


def short_name(wnid: str, words: dict[str, str]) -> str:
    """The label a Tiny ImageNet class gets: the first of its names, else the wnid."""
    return words.get(wnid, wnid).split(",")[0].strip() or wnid


def val_annotations(root: Path) -> list[tuple[Path, str]]:
    """(image path, wnid) of every line of `val/val_annotations.txt`."""
    out = []
    for line in (root / VAL_ANNOTATIONS).read_text().splitlines():
        parts = line.split("\t")
        if len(parts) >= 2:
            out.append((root / VAL_IMAGES / parts[0], parts[1]))
    return out


def class_folders(root: Path, skip: set[Path] | None = None) -> dict[str, Path]:
    """Class name → folder of a class-per-folder tree, sorted; hidden folders, `unlabeled` and
    `skip` (resolved paths) left out."""
    skip = {*(skip or set()), (root / UNLABELED_FOLDER).resolve()}
    return {d.name: d for d in sorted(root.iterdir())
            if d.is_dir() and not d.name.startswith(".") and d.resolve() not in skip}
