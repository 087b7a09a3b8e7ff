"""Atomic file writes: a crash leaves the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from edge_ssl.errors import RunDirError


def temporary_beside(target: Path) -> Path:
    """A new, empty, hidden file in `target`'s folder with `target`'s suffix, to rename over it.

    Same folder, so the rename is atomic; the suffix is kept because some writers (Keras,
    matplotlib) pick the format from it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.stem}.", suffix=target.suffix,
                                    dir=target.parent)
    os.close(fd)
    # mkstemp creates 0600; artifacts get the permissions any new file would (umask applies).
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp_name, 0o666 & ~umask)
    return Path(tmp_name)


@contextmanager
def atomic_path(target: Path) -> Iterator[Path]:
    """Yield a temporary path beside `target` and rename it over `target` on success."""
    tmp = temporary_beside(target)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_with(target: Path, writer: Callable[[Path], Any]) -> Path:
    """Call `writer(tmp_path)` and atomically move the result to `target`."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)


def write_text(target: Path, text: str) -> Path:
    return write_with(target, lambda p: p.write_text(text, encoding="utf-8"))


def write_json(target: Path, obj: Any) -> Path:
    return write_text(target, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


# Folders: built in a hidden staging folder beside their destination, then renamed into place.


def refuse_existing(folder: Path, overwrite: bool) -> None:
    """Raise RunDirError when `folder` exists (and is not an empty folder) without overwrite."""
    if (folder.exists() or folder.is_symlink()) and not overwrite and (
            not folder.is_dir() or any(folder.iterdir())):
        raise RunDirError(f"{folder} already exists; pass --overwrite to replace it.")


def sibling(folder: Path, tag: str) -> Path:
    """A hidden, unique name beside `folder` (same file system, so renames are atomic)."""
    return folder.with_name(f".{folder.name}-{tag}-{os.getpid()}-{secrets.token_hex(4)}")


def publish_folder(staging: Path, folder: Path, overwrite: bool) -> None:
    """Rename the complete `staging` folder to `folder`, replacing it only with `overwrite`.

    Two renames: a crash between them leaves the previous folder in a hidden -old sibling.
    """
    refuse_existing(folder, overwrite)  # another writer may have finished meanwhile
    old = None
    if folder.exists() or folder.is_symlink():
        old = sibling(folder, "old")
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None and old.is_dir() and not old.is_symlink():
        shutil.rmtree(old)
    elif old is not None:
        old.unlink()
