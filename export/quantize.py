"""Reduced-precision variants of an exported FP32 file, through onnxruntime's public tools.

INT8 is static QDQ with uint8 activations and per-channel int8 weights: onnxruntime then runs all
52 convolutions of MobileNetV2 as QLinearConv, 2.1–2.45× FP32 at batch 32 on the VNNI CPU of
design §10 (benchmarks/README.md says why not 2.5×), while the int8-activation default left a
third of them in FP32 between Transposes and was slower than FP32.
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
    folding is skipped and INT8 runs 3× slower). The final Softmax stays float: quantized, the
    probabilities would come in steps of 1/255, not sum to 1, and tie where FP32 does not.

    Raises:
        ExportError: onnxruntime's tools failed.
    """
    with tempfile.TemporaryDirectory(prefix="edge-ssl-int8-") as tmp:
        source, prepared, output = (Path(tmp) / name for name in
                                    ("fp32.onnx", "prepared.onnx", "int8.onnx"))
        onnx.save(fp32, source)
        try:
            quant_pre_process(str(source), str(prepared))
            softmax = [n.name for n in onnx.load(prepared).graph.node if n.op_type == "Softmax"]
            quantize_static(
                str(prepared), str(output), _Batches(calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=softmax,
            )
        except Exception as exc:  # onnxruntime's tools raise many unrelated types
            raise ExportError(f"INT8 quantization failed: {type(exc).__name__}: {exc}") from exc
        return _sorted_cast_first(onnx.load(output))


def to_fp16(fp32: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and compute, FP32 outputs; the uint8 input, its Cast and Resize unchanged.

    Raises:
        ExportError: the conversion failed.
    """
    try:
        fp16 = convert_float_to_float16(fp32, keep_io_types=True, op_block_list=FP16_BLOCKED_OPS)
    except Exception as exc:  # the converter raises plain Exceptions and asserts
        raise ExportError(f"FP16 conversion failed: {type(exc).__name__}: {exc}") from exc
    return _sorted_cast_first(fp16)


def _sorted_cast_first(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Reorder nodes topologically with the input's Cast first (the graph contract).

    The float16 converter appends the Casts it inserts at the end of the node list, which the
    checker rejects, and quantize_static puts the weights' DequantizeLinear nodes first.
    """
    graph = proto.graph
    nodes = list(graph.node)
    # Moving the input's consumer to the front first makes the stable sort below keep it there.
    nodes.sort(key=lambda node: contract.INPUT_NAME not in node.input)
    known = {value.name for value in graph.input} | {init.name for init in graph.initializer}
    known.add("")  # an omitted optional input
    ordered: list[onnx.NodeProto] = []
    while nodes:
        ready = next((n for n in nodes if all(name in known for name in n.input)), None)
        if ready is None:
            raise ExportError("the converted graph has a cycle or a dangling input")
        nodes.remove(ready)
        ordered.append(ready)
        known.update(ready.output)
    del graph.node[:]
    graph.node.extend(ordered)
    return proto
