"""Start TensorFlow for a command: its C++/absl start-up noise kept off the user's terminal
unless --verbose, and GPUs set to take memory as needed."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress


@contextmanager
def _stderr_fd_silenced() -> Iterator[None]:
    # absl writes "All log messages before absl::InitializeLog()" and the oneDNN/CUDA probe lines
    # from C++ straight to file descriptor 2 before TF_CPP_MIN_LOG_LEVEL is read, so the only
    # way to hide them is to point fd 2 elsewhere while TensorFlow loads.
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def start_tensorflow(verbose: bool = False) -> None:
    """Import TensorFlow and Keras once, quietly unless `verbose`."""
    if "tensorflow" in sys.modules:
        return
    if not verbose:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        os.environ.setdefault("ABSL_MIN_LOG_LEVEL", "3")
        with _stderr_fd_silenced():
            _import()
        import logging

        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    else:
        _import()


def _import() -> None:
    try:
        import keras  # noqa: F401
        import tensorflow as tf
    except ImportError:
        from edge_ssl.errors import EdgeSslError

        raise EdgeSslError(
            "TensorFlow is not installed; training and export need it: "
            "pip install 'edge-ssl[train]'"
        ) from None
    # Memory growth: TensorFlow takes GPU memory as it needs it instead of the whole card at
    # start, so that onnxruntime (export's checks), another run or another process can share it.
    # Set before any device is initialised; devices of a TensorFlow already started keep theirs.
    for gpu in tf.config.list_physical_devices("GPU"):
        with suppress(RuntimeError):
            tf.config.experimental.set_memory_growth(gpu, True)
