"""The run directory: naming, the overwrite guard, `runs/latest`, and finding a run again."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from edge_ssl.contract import CONFIG_FILE, LATEST
from edge_ssl.errors import RunDirError


def new_run_name() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")


def create_run_dir(runs_dir: Path, name: str, overwrite: bool, resumable: bool = True) -> Path:
    """Make `runs_dir/name`, refusing to touch an existing run unless `overwrite`.

    `resumable`: whether to suggest `edge-ssl train --resume` for an existing run (not for the
    demo, which also exports and classifies).
    """
    if not name or name == LATEST or "/" in name or name.startswith("."):
        raise RunDirError(f"--name {name!r} is not a usable run name; pick a plain folder name.")
    run = runs_dir / name
    if run.exists() or run.is_symlink():
        if not overwrite:
            resume = f", `edge-ssl train --resume {run}` to continue it," if resumable else ""
            raise RunDirError(f"{run} already exists; pass --overwrite to replace it{resume} "
                              "or --name to pick another name.")
        if run.is_symlink() or run.is_file():
            run.unlink()
        else:
            shutil.rmtree(run)
    run.mkdir(parents=True)
    point_latest(run)
    return run


def point_latest(run: Path) -> None:
    """Atomically repoint `runs/latest` at `run` (a relative symlink, so runs/ can move)."""
    link = run.parent / LATEST
    tmp = run.parent / f".{LATEST}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    os.symlink(run.name, tmp)
    os.replace(tmp, link)


def resolve_run(run: Path) -> Path:
    """An existing run directory (following `latest`), or an error that says how to make one."""
    if not run.exists():
        hint = ("no run has been trained here yet; run `edge-ssl train` first"
                if run.name == LATEST else "check the path, or run `edge-ssl train` to create it")
        raise RunDirError(f"{run}: no such run directory; {hint}.")
    resolved = run.resolve()
    if not resolved.is_dir():
        raise RunDirError(f"{run}: not a run directory (expected a folder made by edge-ssl train).")
    if not (resolved / CONFIG_FILE).is_file():
        raise RunDirError(f"{run}: has no {CONFIG_FILE}, so it was not made by `edge-ssl train`.")
    return resolved
