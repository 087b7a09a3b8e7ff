"""Make the built-in pretext from a finished run:
`python -m edge_ssl.train.builtin RUN DEST COMMAND IMAGES WALL_SECONDS [NOTE]`.

A maintainer's tool. The folder it writes is what `--pretext-init builtin`, `edge-ssl finetune
builtin` and `edge-ssl study builtin` start from (edge_ssl/rundir.py finds and checks it): the
run's config.json without its data path, pretext.keras, report.json's pretext section, and
provenance.json saying how the model was made, down to its sha256.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

from edge_ssl import contract as C
from edge_ssl.atomic import write_json
from edge_ssl.errors import RunDirError
from edge_ssl.rundir import PROVENANCE_FILE


def pack(run: Path, dest: Path, command: str, images: str, wall_seconds: float,
         note: str = "") -> dict[str, Any]:
    """Write the built-in folder `dest` from `run`; returns its provenance. `command` is the
    `edge-ssl train` command that made the run, `images` what its images were, `wall_seconds`
    the pretext's wall time over every session it took, `note` how to read that time."""
    report_path = run / C.REPORT_FILE
    if not (run / C.PRETEXT_MODEL).is_file() or not report_path.is_file():
        raise RunDirError(f"{run}: no finished pretext here (pretext.keras and report.json).")
    config = json.loads((run / C.CONFIG_FILE).read_text())
    pretext = json.loads(report_path.read_text())["pretext"]
    # Which classes' images it has seen (their labels unused): a user testing on one of them
    # should know. Tiny ImageNet names them in wnids.txt.
    data = config["config"]["data"]
    wnids = Path(data) / "wnids.txt" if data else None
    seen = wnids.read_text().split() if wnids and wnids.is_file() else None
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(run / C.PRETEXT_MODEL, dest / C.PRETEXT_MODEL)
    # The data folder of the machine it was trained on means nothing elsewhere.
    write_json(dest / C.CONFIG_FILE, {**config, "config": {**config["config"], "data": None}})
    write_json(dest / C.REPORT_FILE, {"pretext": pretext})
    provenance = {
        "command": command, "data": images, "classes_seen": seen, "labels_used": False,
        "width": config["config"]["width"], "image_size": config["image_size"],
        "backbone_ends_at": pretext.get("backbone_ends_at"),
        "epochs": pretext["epochs_run"], "best_epoch": pretext.get("best_epoch"),
        "wall_seconds": round(wall_seconds), "wall_note": note, "device": config.get("device"),
        "heldout_rotation": pretext["heldout_rotation"], "versions": config.get("versions"),
        "bytes": (dest / C.PRETEXT_MODEL).stat().st_size,
        "sha256": hashlib.sha256((dest / C.PRETEXT_MODEL).read_bytes()).hexdigest()}
    write_json(dest / PROVENANCE_FILE, provenance)
    return provenance


if __name__ == "__main__":
    run_dir, out, made_by, what, seconds, *note = sys.argv[1:7]
    print(json.dumps(pack(Path(run_dir), Path(out), made_by, what, float(seconds), *note),
                     indent=2))
