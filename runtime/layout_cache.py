"""The layout a calibration chose, remembered per model, batch size and machine.

Timing the candidate layouts takes about half a second: as long as classifying a thousand small
images. The answer depends only on the model file, the batch size, the cores this process may
use, whether idle threads spin, the CPU and the onnxruntime version, so the next job with all of
these the same opens the remembered layout at once. The file is `layouts.json` in edge-ssl's
cache folder (`user_cache`); delete it to calibrate again. A cache that cannot be read or
written costs only the calibration, never the job.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from edge_ssl.atomic import write_json
from edge_ssl.runtime import user_cache
from edge_ssl.runtime.cpu import cpu_info
from edge_ssl.runtime.parallel import Layout

log = logging.getLogger(__name__)

FILE_NAME = "layouts.json"
# Bumped when calibration changes what it would choose, so that older choices are not reused:
# 2 pauses between blocks for spinning threads (1 had kept one session for spinning layouts).
CALIBRATION = 2
MAX_ENTRIES = 256  # the oldest go first: a cache of models long deleted should not grow


def cache_file() -> Path | None:
    """Where the layouts are kept (see the module's docstring); None without a home."""
    folder = user_cache.folder()
    return None if folder is None else folder / FILE_NAME


def key(model: Path, device: str, batch_size: int, cores: int, spin: bool) -> str | None:
    """What the fastest layout depends on, as one string: the model's content (not its name:
    a re-export to the same path is another model), the device asked for, the batch size, the
    usable cores, whether idle threads spin, the CPU and onnxruntime's version. None when the
    model cannot be read (opening it will say why)."""
    import onnxruntime as ort

    digest = user_cache.model_digest(model)
    if digest is None:
        return None
    return (f"{digest} {device} batch={batch_size} cores={cores} spin={int(spin)} "
            f"{cpu_info().name} onnxruntime={ort.__version__} calibration={CALIBRATION}")


def load(entry: str | None) -> Layout | None:
    """The layout stored under `entry`, or None (none stored, or an unreadable cache)."""
    found = _read().get(entry) if entry else None
    if not isinstance(found, dict):
        return None
    try:
        threads = found["threads"]
        return Layout(int(found["sessions"]), None if threads is None else int(threads))
    except (KeyError, TypeError, ValueError):
        return None


def store(entry: str | None, layout: Layout) -> None:
    """Remember `layout` under `entry` (written atomically: a reader never sees half a file);
    a failure is logged and ignored."""
    path = cache_file()
    if not entry or path is None:
        return
    entries = _read()
    entries.pop(entry, None)
    entries[entry] = layout.to_json()
    try:
        write_json(path, dict(list(entries.items())[-MAX_ENTRIES:]))
    except OSError as exc:
        log.debug("could not remember the layout in %s: %s", path, exc)


def _read() -> dict[str, object]:
    path = cache_file()
    if path is None:
        return {}
    try:
        entries = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.debug("ignoring the layout cache %s: %s", path, exc)
        return {}
    return entries if isinstance(entries, dict) else {}
