"""Keep TensorFlow's C++/absl start-up noise off the user's terminal unless --verbose."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager


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


def import_tensorflow(verbose: bool = False) -> None:
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
        import tensorflow  # noqa: F401
    except ImportError:
        from edge_ssl.errors import EdgeSslError

        raise EdgeSslError(
            "TensorFlow is not installed; training and export need it: "
            "pip install 'edge-ssl[train]'"
        ) from None
