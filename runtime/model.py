"""Open an edge-ssl ONNX model with onnxruntime alone: its metadata, its input, its provider.

Everything the runtime needs (labels, native size, task) is in the model's `metadata_props`,
read through onnxruntime so that an edge device needs neither the `onnx` package nor the run
directory. onnxruntime itself is imported inside the functions: the CLI imports this module for
its `Device` choices and must start instantly.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge_ssl import contract
from edge_ssl.errors import ConfigError, DeviceError, ModelError
from edge_ssl.options import RUNTIME, option
from edge_ssl.runtime import graph_cache, user_cache

if TYPE_CHECKING:
    import onnxruntime as ort

DEFAULT_MODEL = Path(contract.RUNS_DIR, contract.LATEST, contract.EXPORTS_DIR,
                     contract.CLASSIFIER_ONNX)
TASKS = (contract.TASK_ROTATION, contract.TASK_CLASSIFICATION)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
_ERRORS, _SILENT = 3, 4  # onnxruntime log severities
# Set when `--device auto` found that CUDA does not start in this process; a GPU does not
# appear in a running process, so the answer holds until it exits.
_CUDA_DID_NOT_START = threading.Event()


class Device(str, Enum):
    """Where inference runs. `auto` takes CUDA when it really starts, else the CPU."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    TENSORRT = "tensorrt"


@dataclass(frozen=True, kw_only=True)
class SessionOptions:
    """Where and how a model runs: the options `classify`, `evaluate` and `bench` share."""

    device: Device = option(
        Device.AUTO, "Execution provider: auto (CUDA when it starts, else the CPU), cpu, cuda "
        "or tensorrt.", "DEVICE", RUNTIME)
    sessions: int | None = option(
        None, "onnxruntime sessions that share each batch, the cores divided among them "
        "(default: the fastest layout on this CPU, from a short calibration).", "N", RUNTIME,
        minimum=1, show_default=False)
    threads: int | None = option(
        None, "onnxruntime intra-op threads per session (default: one per core for one "
        "session).", "N", RUNTIME, minimum=1, show_default=False)

    def __post_init__(self) -> None:
        require_positive(self, "sessions", "threads")


def require_positive(config: object, *names: str) -> None:
    """Raise ConfigError naming the first of `names` whose value is set and below 1."""
    for name in names:
        value = getattr(config, name)
        if value is not None and value < 1:
            raise ConfigError(f"{name} is {value}; it must be at least 1")


@dataclass(frozen=True)
class ModelInfo:
    """What the runtime knows about a model, all of it from the model file itself."""

    path: Path
    task: str
    labels: tuple[str, ...]
    image_size: int
    interpolation: str
    precision: str | None
    input: str  # "any" image size, or "fixed": image_size × image_size only
    version: str | None
    run: str | None
    exported_at: str | None
    file_size: int


def resolve_model(model: Path | None) -> Path:
    """The model to use: `model`, or the classifier of `runs/latest` when None.

    Raises:
        ModelError: when the default model does not exist.
    """
    if model is not None:
        return Path(model)
    if not DEFAULT_MODEL.is_file():
        raise ModelError(
            f"no model at {DEFAULT_MODEL}; run `edge-ssl train` and `edge-ssl export` first, "
            "or pass --model M.onnx."
        )
    return DEFAULT_MODEL


def open_session(
    path: Path, device: Device = Device.AUTO, threads: int | None = None, spin: bool = True
) -> tuple[ort.InferenceSession, ModelInfo, str]:
    """Create an inference session on the best provider allowed by `device`.

    Args:
        path: an ONNX model written by `edge-ssl export`.
        device: `auto` takes CUDA when it starts and falls back to the CPU; `cpu`, `cuda` and
            `tensorrt` insist on that provider.
        threads: onnxruntime intra-op threads; None lets onnxruntime pick (one per core).
        spin: let idle intra-op threads spin-wait, onnxruntime's default: the lowest latency
            when nothing else needs the cores. Off for classify, whose decoding threads do.

    Returns:
        (session, model info, the provider that actually runs the model).

    Raises:
        ModelError: the file is missing, not ONNX, or not an edge-ssl model.
        DeviceError: the requested provider is not available or does not start.
    """
    import onnxruntime as ort

    path = Path(path)
    ort.set_default_logger_severity(_ERRORS)  # its warnings are for onnxruntime developers
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    # The memory pattern plans a shape's buffers after its first run and makes the second run
    # slow (FP32 batch 32: 23 ms instead of 13), again for each new batch size; without it every
    # run takes the steady time from the first, which is no slower (docs/benchmarks.md).
    options.enable_mem_pattern = False
    options.intra_op_num_threads = threads or 0
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
    if device is Device.AUTO:
        session = _load_auto(path, options)
    else:
        session = _load_on(path, options, device)
    info = model_info(session, path)
    return session, info, session.get_providers()[0]


def model_info(session: ort.InferenceSession, path: Path) -> ModelInfo:
    """Check the session's signature against the contract and read its metadata.

    Raises:
        ModelError: with what is wrong and how to get a model that is right.
    """
    from edge_ssl.images import INTERPOLATION  # numpy and Pillow: not at CLI start-up

    meta = session.get_modelmeta().custom_metadata_map
    if contract.META_TASK not in meta:
        raise ModelError(
            f"{path}: no edge-ssl metadata ({contract.META_TASK} is missing); use a model "
            "written by `edge-ssl export`, which records its labels and image size."
        )
    task = _meta(meta, contract.META_TASK, path, str)
    labels = _meta(meta, contract.META_LABELS, path, list)
    size = _meta(meta, contract.META_IMAGE_SIZE, path, int)
    interpolation = _optional(meta, contract.META_INTERPOLATION, path) or INTERPOLATION
    if task not in TASKS:
        raise ModelError(f"{path}: unknown task {task!r} in its metadata; expected one of "
                         f"{', '.join(TASKS)}; re-export it with `edge-ssl export`.")
    if not labels or not all(isinstance(label, str) for label in labels) or size < 1:
        raise ModelError(f"{path}: malformed labels or image size in its metadata; "
                         "re-export it with `edge-ssl export`.")
    if interpolation != INTERPOLATION:
        raise ModelError(f"{path}: trained with {interpolation} resizing but this runtime "
                         f"resizes {INTERPOLATION}; re-export it with this edge-ssl version.")
    input_kind = _optional(meta, contract.META_INPUT, path) or contract.INPUT_ANY
    _check_signature(session, path, len(labels), size if input_kind == contract.INPUT_FIXED
                     else None)
    return ModelInfo(
        path=path,
        task=task,
        labels=tuple(labels),
        image_size=size,
        interpolation=interpolation,
        precision=_optional(meta, contract.META_PRECISION, path),
        input=input_kind,
        version=_optional(meta, contract.META_VERSION, path),
        run=_optional(meta, contract.META_RUN, path),
        exported_at=_optional(meta, contract.META_EXPORTED_AT, path),
        file_size=path.stat().st_size,
    )


def _check_signature(session: ort.InferenceSession, path: Path, num_labels: int,
                     fixed: int | None) -> None:
    inputs = session.get_inputs()
    first = inputs[0] if len(inputs) == 1 else None
    if (first is None or first.name != contract.INPUT_NAME or first.type != "tensor(uint8)"
            or len(first.shape) != 4 or first.shape[3] != 3):
        described = ", ".join(f"{i.name}: {_describe(i.type, i.shape)}" for i in inputs)
        raise ModelError(
            f"{path}: its input is ({described}), not {contract.INPUT_NAME}: uint8 [N, H, W, 3]; "
            "export it with `edge-ssl export`, which puts the uint8 image input first."
        )
    if fixed is not None and first.shape[1:3] != [fixed, fixed]:
        raise ModelError(f"{path}: its metadata says it takes {fixed}×{fixed} images, but its "
                         f"input is {_describe(first.type, first.shape)}; re-export it with "
                         "`edge-ssl export`.")
    outputs = {o.name: o for o in session.get_outputs()}
    out = outputs.get(contract.OUTPUT_NAME)
    if out is None or out.type != "tensor(float)" or len(out.shape) != 2:
        raise ModelError(f"{path}: it has no {contract.OUTPUT_NAME}: float32 [N, C] output; "
                         "export it with `edge-ssl export`.")
    classes = out.shape[1]
    if isinstance(classes, int) and classes != num_labels:
        raise ModelError(f"{path}: {classes} outputs but {num_labels} labels in its metadata; "
                         "re-export it with `edge-ssl export`.")


def _describe(onnx_type: str, shape: list[Any]) -> str:
    dtype = onnx_type.removeprefix("tensor(").removesuffix(")")
    dims = ", ".join(str(d) if isinstance(d, int) else "?" for d in shape)
    return f"{dtype} [{dims}]"


def _meta(meta: dict[str, str], key: str, path: Path, kind: type) -> Any:
    if key not in meta:
        raise ModelError(f"{path}: its metadata lacks {key}; re-export it with `edge-ssl export`.")
    value = _decode(meta, key, path)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ModelError(f"{path}: {key} is {meta[key]!r}, not a JSON {kind.__name__}; "
                         "re-export it with `edge-ssl export`.")
    return value


def _optional(meta: dict[str, str], key: str, path: Path) -> str | None:
    return None if key not in meta else str(_decode(meta, key, path))


def _decode(meta: dict[str, str], key: str, path: Path) -> Any:
    try:
        return json.loads(meta[key])
    except json.JSONDecodeError:
        raise ModelError(f"{path}: {key} is {meta[key]!r}, which is not JSON; "
                         "re-export it with `edge-ssl export`.") from None


def _load_auto(path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    """CUDA when it starts, else the CPU. Once CUDA has not started in this process, the
    sessions after go straight to the CPU, and to its kept graphs (`graph_cache`): a layout's
    second session then opens in 5 ms instead of 10 (INT8, onnxruntime-gpu without a GPU)."""
    import onnxruntime as ort

    if CUDA in ort.get_available_providers() and not _CUDA_DID_NOT_START.is_set():
        # onnxruntime itself drops to the CPU when CUDA does not start (no GPU, missing
        # libraries); silence its error lines, since falling back is what auto means.
        ort.set_default_logger_severity(_SILENT)
        try:
            session = _load(path, options, [CUDA, CPU])
        except DeviceError:
            session = None
        finally:
            ort.set_default_logger_severity(_ERRORS)
        if session is not None and session.get_providers()[0] == CUDA:
            return session
        _CUDA_DID_NOT_START.set()
        if session is not None:
            return session
    return _load_cpu(path, options)


def _load_on(path: Path, options: ort.SessionOptions, device: Device) -> ort.InferenceSession:
    import onnxruntime as ort

    wanted = {Device.CPU: CPU, Device.CUDA: CUDA, Device.TENSORRT: TENSORRT}[device]
    if wanted not in ort.get_available_providers():
        raise DeviceError(
            f"--device {device.value}: this onnxruntime build has no {wanted} "
            f"(it has {', '.join(ort.get_available_providers())}); install onnxruntime-gpu "
            "or use --device auto."
        )
    if device is Device.CPU:
        return _load_cpu(path, options)
    providers: list[Any] = [CUDA, CPU]
    if device is Device.TENSORRT:
        providers = [(TENSORRT, _tensorrt_options()), CUDA, CPU]
    session = _load(path, options, providers)
    if session.get_providers()[0] != wanted:
        raise DeviceError(_not_started(wanted))
    return session


def _load_cpu(path: Path, options: ort.SessionOptions) -> ort.InferenceSession:
    """On the CPU provider, through the optimized graph kept for this CPU (`graph_cache`)."""
    return graph_cache.open_cpu(path, options, lambda model, opts: _load(model, opts, [CPU]))


def _tensorrt_options() -> dict[str, Any]:
    # Building a TensorRT engine takes minutes; keep it for the next process.
    folder = user_cache.folder()
    if folder is None:
        return {}
    cache = folder / "tensorrt"
    cache.mkdir(parents=True, exist_ok=True)
    return {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}


def _load(path: Path, options: ort.SessionOptions, providers: list[Any]) -> ort.InferenceSession:
    import onnxruntime as ort

    if not path.exists():
        kind = "broken symbolic link" if path.is_symlink() else "no such file"
        raise ModelError(f"{path}: {kind}; pass the .onnx file that `edge-ssl export` wrote.")
    if path.is_dir():
        raise ModelError(f"{path} is a folder; pass the .onnx file that `edge-ssl export` wrote.")
    if path.stat().st_size == 0:
        raise ModelError(f"{path}: empty file; pass the .onnx file that `edge-ssl export` wrote.")
    try:
        # No silent fallback: a provider that fails must raise, so that we can say so.
        return ort.InferenceSession(str(path), options, providers=providers, enable_fallback=0)
    except PermissionError:
        raise ModelError(f"{path}: permission denied; make the model file readable.") from None
    except Exception as exc:  # onnxruntime raises its own exception types, not OSError
        reason = str(exc).split(" : ")[-1].strip().splitlines()[0]
        if type(exc).__name__ == "InvalidProtobuf":
            raise ModelError(f"{path}: not an ONNX model ({reason}); pass the .onnx file "
                             "that `edge-ssl export` wrote.") from None
        if providers == [CPU]:
            raise ModelError(f"{path}: onnxruntime cannot load this model ({reason}); "
                             "re-export it with `edge-ssl export`.") from None
        raise DeviceError(_not_started(_name(providers[0]))) from None


def _not_started(provider: str) -> str:
    return (f"onnxruntime could not start {provider} here (no GPU, or its CUDA, cuDNN or "
            "TensorRT libraries are missing); use --device cpu or --device auto.")


def _name(provider: Any) -> str:
    return provider[0] if isinstance(provider, tuple) else str(provider)
