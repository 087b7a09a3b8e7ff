"""Reduced-precision variants of an exported FP32 file, through onnxruntime's public tools.

INT8 is static QDQ with uint8 activations and per-channel int8 weights: on the VNNI CPU of design
§10 that format quantized every convolution and ran 2.6× FP32, while the int8-activation default
left a third of them in FP32 between Transposes and was slower than FP32.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

from edge_ssl import contract
from edge_ssl.errors import ExportError

CALIBRATION_BATCH = 16
# Resize's roi/scales inputs and the uint8 → float Cast break when converted to float16.
FP16_BLOCKED_OPS = [*DEFAULT_OP_BLOCK_LIST, "Resize", "Cast"]


class _Batches(CalibrationDataReader):
    """Feeds uint8 `[N, S, S, 3]` calibration images to the graph input in small batches."""

    def __init__(self, images: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [images[i:i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {contract.INPUT_NAME: batch}


def to_int8(fp32: onnx.ModelProto, calibration: np.ndarray) -> onnx.ModelProto:
    """Static QDQ INT8: uint8 activations, int8 per-channel weights, MinMax calibration.

    quant_pre_process first folds BatchNorm and infers shapes (it needs sympy; without it the
    folding is skipped and INT8 runs 3× slower).

    Raises:
        ExportError: onnxruntime's tools failed.
    """
    with tempfile.TemporaryDirectory(prefix="edge-ssl-int8-") as tmp:
        source, prepared, output = (Path(tmp) / name for name in
                                    ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(fp32, source)
        try:
            quant_pre_process(str(source), str(prepared))
            quantize_static(
                str(prepared), str(output), _Batches(calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
            )
        except Exception as exc:  # onnxruntime's tools raise many unrelated types
            raise ExportError(f"INT8 quantization failed: {type(exc).__name__}: {exc}") from exc
        return onnx.load(output)


def to_fp16(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and compute, FP32 outputs; the uint8 input, its Cast and Resize unchanged.

    Raises:
        ExportError: the conversion failed.
    """
    try:
        return convert_float_to_float16(fp32, keep_io_types=True, op_block_list=FP16_BLOCKED_OPS)
    except Exception as exc:  # the converter raises plain Exceptions and asserts
        raise ExportError(f"FP16 conversion failed: {type(exc).__name__}: {exc}") from exc
