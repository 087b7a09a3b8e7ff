"""Typed errors: the library raises these, the CLI turns them into one line and an exit code."""


class EdgeSslError(Exception):
    """Base class; its message is one sentence that tells the user what to do next."""

    exit_code = 1


class ConfigError(EdgeSslError, ValueError):
    """An option value is outside what a stage allows; the message names option, value, range."""


class DataError(EdgeSslError):
    """The training data is missing, empty or malformed."""


class RunDirError(EdgeSslError):
    """A run directory is missing, incomplete, or would be overwritten."""


class TrainingError(EdgeSslError):
    """Training diverged or could not continue."""


class ModelError(EdgeSslError):
    """A model file is missing, unreadable, or not one edge-ssl wrote."""


class ExportError(EdgeSslError):
    """The conversion to ONNX failed."""


class ExportVerificationError(ExportError):
    """An exported model disagrees with its Keras source beyond the tolerance."""


class ImageDecodeError(EdgeSslError):
    """One image could not be read; callers report it and skip the file."""


class DeviceError(EdgeSslError):
    """The requested execution provider (CUDA, TensorRT) is missing or does not start."""


class InferenceError(EdgeSslError):
    """onnxruntime failed while running a model that had loaded."""
