"""The CPU provider's optimized graph of a model, kept so that the next session opens sooner.

onnxruntime optimizes a model's graph whenever it opens a session (constant folding, fusions,
and the blocked NCHWc layout this CPU's vector units want): 5 of the 7 ms that opening the FP32
classifier takes on 2 AMD EPYC cores, 7 of the INT8 one's 11, paid by every command and once per
session of a layout. Saved once (`optimized_model_filepath`) and loaded without optimizing
again, the same graph opens in 2–4 ms and gives the same answers, as fast. The saved graph is
valid only on the CPU and the onnxruntime that made it, so it is kept under a key of the model's
content, the CPU's name and flags, and onnxruntime's version, in `graphs/` of edge-ssl's cache
folder (`user_cache`), the MAX_GRAPHS used last. Anything that goes wrong with the cache costs
only the time it would have saved: a graph that fails to load is deleted and the model opened as
usual. CUDA and TensorRT sessions are not cached: their graphs are optimized for a GPU, and
TensorRT keeps its own engines.
"""

from __future__ import annotations

import logging
import os
import threading
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
CPU = "CPUExecutionProvider"

Load = Callable[[Path, "ort.SessionOptions"], "ort.InferenceSession"]


def open_cpu(path: Path, options: ort.SessionOptions, load: Load) -> ort.InferenceSession:
    """A CPU session of `path`: from its saved graph when there is one, else opened by `load`
    (which raises what is wrong with the model) and its optimized graph saved for next time.

    `options` must ask for full optimization; it is left as it came.
    """
    saved = graph_file(path)
    if saved is None:
        return load(path, options)
    if saved.is_file():
        session = _open_saved(saved, options)
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
    return folder / FOLDER / f"{digest}-{cpu}-onnxruntime{ort.__version__}.onnx"


def _open_saved(saved: Path, options: ort.SessionOptions) -> ort.InferenceSession | None:
    import onnxruntime as ort

    level = options.graph_optimization_level
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(saved), options, providers=[CPU])
    except Exception as exc:  # noqa: BLE001 - onnxruntime's own types: any failure, forget it
        log.debug("dropping the saved graph %s: %s", saved, exc)
        saved.unlink(missing_ok=True)
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
    # A file of this process and thread: two jobs may save the same graph at once.
    temporary = saved.with_name(f".{saved.stem}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        saved.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.debug("cannot keep optimized graphs in %s: %s", saved.parent, exc)
        return load(path, options)
    options.optimized_model_filepath = str(temporary)
    try:
        try:
            session = load(path, options)
        except ModelError:
            # The model, or writing its graph: opened again without saving, so that the
            # model's own error, if it has one, is the one raised.
            options.optimized_model_filepath = ""
            return load(path, options)
        _keep(temporary, saved)
        return session
    finally:
        options.optimized_model_filepath = ""
        temporary.unlink(missing_ok=True)


def _keep(temporary: Path, saved: Path) -> None:
    try:
        os.replace(temporary, saved)
        _evict(saved.parent)
    except OSError as exc:
        log.debug("could not keep the optimized graph %s: %s", saved, exc)


def _evict(folder: Path) -> None:
    graphs = sorted(folder.glob("*.onnx"), key=lambda graph: graph.stat().st_mtime_ns)
    for graph in graphs[:-MAX_GRAPHS]:
        graph.unlink(missing_ok=True)
