"""Run a LiteRT (TensorFlow Lite) file in a layout, as `edge_ssl.runtime.parallel` runs ONNX.

For `edge-ssl bench --compare-litert` and the benchmarks: the peer is timed the way onnxruntime
is, one interpreter with every thread or several with fewer threads each, the batch split among
them on Python threads (the interpreter releases the GIL while it runs). Needs `ai-edge-litert`
(the `[bench]` extra), imported inside the function.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from edge_ssl import contract
from edge_ssl.errors import ConfigError
from edge_ssl.runtime.model import ModelInfo
from edge_ssl.runtime.parallel import Layout, Split

PRECISIONS = ("fp32", "int8")  # LiteRT's own conversions of a classifier

Predict = Callable[[np.ndarray], np.ndarray]


def open_litert(content: bytes, image_size: int, batch_size: int, layout: Layout) -> Split:
    """`layout.sessions` interpreters of `layout.threads` threads each, each sized for its share
    of a uint8 `[batch_size, S, S, 3]` batch; call it with the batch, close it when done."""
    from ai_edge_litert.interpreter import Interpreter

    def interpreter(share: int) -> Predict:
        instance = Interpreter(model_content=content, num_threads=layout.threads)
        (feed,), (fetch,) = instance.get_input_details(), instance.get_output_details()
        instance.resize_tensor_input(feed["index"], [share, image_size, image_size, 3])
        instance.allocate_tensors()

        def predict(images: np.ndarray) -> np.ndarray:
            instance.set_tensor(feed["index"], images)
            instance.invoke()
            return np.array(instance.get_tensor(fetch["index"]))

        return predict

    shares = np.array_split(np.arange(batch_size), min(layout.sessions, batch_size))
    return Split([interpreter(len(share)) for share in shares], layout)


def has_twin(info: ModelInfo) -> bool:
    """Whether LiteRT has its own conversion of this file: FP32 and INT8 classifiers."""
    return info.task == contract.TASK_CLASSIFICATION and info.precision in PRECISIONS


def convert_source(info: ModelInfo) -> bytes:
    """The LiteRT file of the Keras classifier an exported file came from (RUN/classifier.keras
    for RUN/exports/M.onnx): FP32, or INT8 calibrated on the images the ONNX INT8 export
    calibrated on when the file is INT8.

    Raises:
        ConfigError: the Keras model is not where the export left it, or TensorFlow or
            ai-edge-litert is not installed.
    """
    run = info.path.resolve().parent.parent
    source = run / contract.CLASSIFIER_MODEL
    if not source.is_file():
        raise ConfigError(f"{info.path}: --compare-litert converts the Keras model the file was "
                          f"exported from, and there is no {source}; pass the file in its run's "
                          f"{contract.EXPORTS_DIR}/ folder.")
    try:
        import ai_edge_litert  # noqa: F401  (checked here: the conversion takes seconds)

        from edge_ssl.export.litert import to_litert
        from edge_ssl.train.model import load_model
    except ImportError as exc:
        raise ConfigError(f"--compare-litert needs TensorFlow and ai-edge-litert ({exc.name} is "
                          "missing): pip install 'edge-ssl[train,bench]'.") from None
    calibration = None
    if info.precision == "int8":
        from edge_ssl.export.config import ExportConfig

        if not (run / contract.HELDOUT_FILE).is_file():
            raise ConfigError(f"{info.path}: --compare-litert calibrates LiteRT's INT8 on the "
                              f"images in {run / contract.HELDOUT_FILE}, which is missing; "
                              "compare the FP32 file only.")
        with np.load(run / contract.HELDOUT_FILE) as held:
            calibration = held[contract.HELDOUT_CALIBRATION_IMAGES][
                :ExportConfig(run).calibration_images]
    return to_litert(load_model(source), info.image_size, calibration)
