"""Facts about the machine a run trains on, recorded beside its results."""

from __future__ import annotations

import platform
import sys
from pathlib import Path
from typing import Any, TextIO

import keras
import numpy as np
import tensorflow as tf

from edge_ssl import __version__


def on_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def device_description() -> str:
    """What TensorFlow trains on: the GPU when it sees one, else the CPU's model name."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        return f"GPU ({', '.join(g.name for g in gpus)})"
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in
             (cpuinfo.read_text().splitlines() if cpuinfo.exists() else [])
             if line.startswith("model name")]
    return f"CPU ({names[0] if names else platform.processor() or platform.machine()})"


def library_versions() -> dict[str, str]:
    return {"edge_ssl": __version__, "tensorflow": tf.__version__, "keras": keras.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def peak_rss_mb() -> float | None:
    """This process's peak resident set size in MB (None where the OS does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / 1e6 if sys.platform == "darwin" else peak * 1024 / 1e6, 1)


def note_memory(report: dict[str, Any]) -> None:
    """report["peak_rss_mb"]: the most resident memory any session of this run has used."""
    peak = peak_rss_mb()
    if peak is not None:
        report["peak_rss_mb"] = max(peak, report.get("peak_rss_mb", 0.0))


def keras_verbosity(stream: TextIO) -> int:
    """Keras' per-batch progress bar on a terminal; one line per epoch in a pipe or a log."""
    return 1 if stream.isatty() else 2
