"""The CPU provider's optimized graph of a model, kept so that the next session opens sooner.

onnxruntime optimizes a model's graph whenever it opens a session (constant folding, fusions,
and the blocked NCHWc layout this CPU's vector units want): 5 of the 7 ms that opening the FP32
classifier takes on 2 AMD EPYC cores, 7 of the INT8 one's 11, paid by every command and once per
session of a layout. Saved once (`optimized_model_filepath`) and loaded without optimizing
again, the same graph opens in 2–4 ms and gives the same answers, as fast. The saved graph is
valid only on the CPU and the onnxruntime that made it, so it is kept under a key of the model's
content, the CPU's name and flags, and onnxruntime's version and build, in `graphs/` of edge-
ssl's cache folder (`user_cache`), the MAX_GRAPHS used last. Anything that goes wrong with the
cache costs only the time it would have saved: a graph that fails to load is deleted and the
model opened as usual. CUDA and TensorRT sessions are not cached: their graphs are optimized for
a GPU, and TensorRT keeps its own engines.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from edge_ssl.errors import ModelError
from edge_ssl.runtime import user_cache
from edge_ssl.runtime.cpu import fingerprint

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

FOLDER = "graphs"
MAX_GRAPHS = 16  # the least recently used go first: up to 10 MB each
TEMPORARY = ".tmp"  # a graph being saved
STALE_TEMPORARY_SECONDS = 3600  # a save this old was killed: its file is deleted

Load = Callable[[Path, "ort.SessionOptions"], "ort.InferenceSession"]


def open_cpu(path: Path, options: ort.SessionOptions, load: Load) -> ort.InferenceSession:
    """A CPU session of `path`: from its saved graph when there is one, else of the model
    itself, its optimized graph saved for next time. `load` opens a file on the CPU provider
    and raises ModelError for what is wrong with it.

    Only sessions asking for full optimization are cached (the key holds no other option);
    `options` is left as it came.
    """
    import onnxruntime as ort

    saved = graph_file(path)
    full = options.graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if saved is None or not full:
        return load(path, options)
    if saved.is_file():
        session = _open_saved(saved, options, load)
        if session is not None:
            return session
    return _open_and_save(path, options, load, saved)


def graph_file(path: Path) -> Path | None:
    """Where the optimized graph of `path` is kept on this machine; None without a cache
    folder, a readable model or a CPU that can be told apart."""
    import onnxruntime as ort

    folder, digest, cpu = user_cache.folder(), user_cache.model_digest(path), fingerprint()
    if folder is None or digest is None or cpu is None:
        return None
    build = hashlib.sha256(ort.get_build_info().encode()).hexdigest()[:8]
    return folder / FOLDER / f"{digest}-{cpu}-onnxruntime{ort.__version__}-{build}.onnx"


def _open_saved(saved: Path, options: ort.SessionOptions,
                load: Load) -> ort.InferenceSession | None:
    import onnxruntime as ort

    level = options.graph_optimization_level
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = load(saved, options)
    except ModelError as exc:  # a damaged or foreign file: forget it, open the model itself
        log.debug("dropping the saved graph %s: %s", saved, exc)
        _unlink(saved)
        return None
    finally:
        options.graph_optimization_level = level
    try:
        os.utime(saved)  # used now: the last to be evicted
    except OSError:
        pass
    return session


def _open_and_save(path: Path, options: ort.SessionOptions, load: Load,
                   saved: Path) -> ort.InferenceSession:
    # A name of its own: another job (or another machine sharing the folder) may save the
    # same graph at once. Created here first: onnxruntime failing to write it would fail the
    # session, and the model would be optimized twice.
    temporary = saved.with_name(f".{saved.stem}.{uuid.uuid4().hex}{TEMPORARY}")
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
        temporary.touch(exist_ok=False)
    except OSError as exc:
        log.debug("cannot keep optimized graphs in %s: %s", saved.parent, exc)
        return load(path, options)
    options.optimized_model_filepath = str(temporary)
    try:
        try:
            session = load(path, options)
        except ModelError:
            # The model, or writing its graph after all: opened again without saving, so
            # that the model's own error, if it has one, is the one raised.
            options.optimized_model_filepath = ""
            return load(path, options)
        if graph_file(path) == saved:  # the file was not replaced while it was being read
            _keep(temporary, saved)
        return session
    finally:
        options.optimized_model_filepath = ""
        _unlink(temporary)


def _keep(temporary: Path, saved: Path) -> None:
    try:
        os.replace(temporary, saved)
        _evict(saved.parent)
    except OSError as exc:
        log.debug("could not keep the optimized graph %s: %s", saved, exc)


def _evict(folder: Path) -> None:
    """Keep the MAX_GRAPHS graphs used last, and no temporary file of a save that was killed."""
    graphs = sorted(folder.glob("*.onnx"), key=lambda graph: graph.stat().st_mtime_ns)
    stale = time.time() - STALE_TEMPORARY_SECONDS
    for graph in graphs[:-MAX_GRAPHS]:
        _unlink(graph)
    for temporary in folder.glob(f".*{TEMPORARY}"):
        if temporary.stat().st_mtime < stale:
            _unlink(temporary)


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.debug("could not delete %s: %s", path, exc)
