"""edge-ssl: rotation-prediction self-supervision to small, verified ONNX models."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("edge-ssl")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0+unknown"
