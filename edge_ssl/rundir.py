"""The run directory: naming, the overwrite guard, `runs/latest`, and finding a run again."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timezone
from pathlib import Path

from edge_ssl.contract import CONFIG_FILE, LATEST, PRETEXT_MODEL
from edge_ssl.errors import RunDirError

BUILTIN = "builtin"  # what --pretext-init, finetune and study take for the shipped pretext
PROVENANCE_FILE = "provenance.json"  # how the shipped pretext was made, with its sha256


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
    """An existing run directory (following `latest`), the pretext shipped with edge-ssl for
    `builtin` (when no folder of that name is here), or an error that says how to make one."""
    if str(run) == BUILTIN and not run.exists():
        return builtin_pretext()
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


def builtin_dir() -> Path:
    """Where the shipped pretext lives: a run-like folder in the installed edge_ssl.train
    package (config.json, pretext.keras, report.json, provenance.json). Found without importing
    the package, which would start TensorFlow."""
    import importlib.util

    spec = importlib.util.find_spec("edge_ssl.train")
    locations = list(spec.submodule_search_locations or []) if spec else []
    return Path(locations[0]) / BUILTIN if locations else Path(BUILTIN)


def builtin_pretext() -> Path:
    """The shipped pretext's folder, its file checked against the sha256 its provenance
    records; RunDirError naming what is wrong otherwise."""
    import hashlib
    import json

    folder = builtin_dir()
    provenance, model = folder / PROVENANCE_FILE, folder / PRETEXT_MODEL
    if not (provenance.is_file() and model.is_file() and (folder / CONFIG_FILE).is_file()):
        raise RunDirError(f"{folder}: this installation of edge-ssl has no built-in pretext; "
                          "reinstall edge-ssl, or pass a run directory of `edge-ssl train`.")
    expected = json.loads(provenance.read_text()).get("sha256")
    actual = hashlib.sha256(model.read_bytes()).hexdigest()
    if actual != expected:
        raise RunDirError(f"{model}: its sha256 {actual[:12]}… is not the {str(expected)[:12]}… "
                          f"that {PROVENANCE_FILE} records; the file is damaged or was "
                          "replaced: reinstall edge-ssl.")
    return folder.resolve()
