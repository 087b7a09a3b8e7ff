"""Typed errors: the library raises these, the CLI turns them into one line and an exit code.

Each class carries the exit status of the runtime commands (`classify`, `evaluate`), which tell
"fix the command line" (2) from "fix the data" (3) from "fix the model or the device" (4); the
other commands exit 1 on any of them (edge_ssl/console.py maps both in one place).
"""

from edge_ssl import exit_codes


class EdgeSslError(Exception):
    """Base class; its message is one sentence that tells the user what to do next."""

    exit_code = exit_codes.FAILED


class ConfigError(EdgeSslError, ValueError):
    """An option value is outside what a stage allows; the message names option, value, range."""

    exit_code = exit_codes.USAGE


class DataError(EdgeSslError):
    """The training data is missing, empty or malformed; no image could be processed."""

    exit_code = exit_codes.NOTHING_DONE


class RunDirError(EdgeSslError):
    """A run directory is missing, incomplete, or would be overwritten."""


class TrainingError(EdgeSslError):
    """Training diverged or could not continue."""


class ModelError(EdgeSslError):
    """A model file is missing, unreadable, or not one edge-ssl wrote."""

    exit_code = exit_codes.MODEL_FAILURE


class ExportError(EdgeSslError):
    """The conversion to ONNX failed."""


class ExportVerificationError(ExportError):
    """An exported model disagrees with its Keras source beyond the tolerance."""


class ImageDecodeError(EdgeSslError):
    """One image could not be read; callers report it and skip the file."""


class DeviceError(EdgeSslError):
    """The requested execution provider (CUDA, TensorRT) is missing or does not start."""

    exit_code = exit_codes.MODEL_FAILURE


class InferenceError(EdgeSslError):
    """onnxruntime failed while running a model that had loaded."""

    exit_code = exit_codes.MODEL_FAILURE
