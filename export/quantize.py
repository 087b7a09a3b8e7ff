"""Reduced-precision variants of an exported FP32 file, through onnxruntime's public tools.

INT8 is static QDQ with uint8 activations and per-channel int8 weights: onnxruntime then runs
every convolution of MobileNetV2 as QLinearConv, while the int8-activation default leaves some
in FP32 between Transposes and is slower than FP32 (docs/benchmarks.md has the measurements).
The weights use 7 bits of the 8 (`reduce_range`), so that x86 CPUs without VNNI, whose u8·s8
instruction saturates 16-bit sums of full-range products, answer as ARM, browsers and VNNI CPUs
do.
The convolution that reads the image is quantized with a fourth input channel of zeros
(`graph_edit.widen_first_conv`), which onnxruntime's fast INT8 kernel needs.

INT8 keeps the FP32 model's answers: when the fully quantized model's top-1 agrees with FP32 on
fewer of the gate images than the budget asks, the nodes ranked most sensitive are kept in FP32,
one more at a time, each attempt quantized again through `quantize_static`
(`nodes_to_exclude`), until the budget is met or the allowed number of FP32 nodes is used up
(accuracy-aware quantization, as OpenVINO NNCF's `quantize_with_accuracy_control` does).
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
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
from edge_ssl.export import graph_edit, verify
from edge_ssl.stats import Rate

log = logging.getLogger(__name__)

CALIBRATION_BATCH = 16
# Resize's roi/scales inputs and the uint8 → float Cast break when converted to float16.
FP16_BLOCKED_OPS = [*DEFAULT_OP_BLOCK_LIST, "Resize", "Cast"]


# Nodes the INT8 fallback may keep in FP32: those with weights, and the residual additions.
FALLBACK_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul", "Add"})
RANKING_IMAGES = 32  # training images that calibrate and score each node's sensitivity


class _Batches(CalibrationDataReader):
    """Feeds uint8 `[N, S, S, 3]` calibration images to the graph input in small batches."""

    def __init__(self, images: np.ndarray) -> None:
        self._batches: Iterator[np.ndarray] = iter(
            [images[i:i + CALIBRATION_BATCH] for i in range(0, len(images), CALIBRATION_BATCH)])

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {contract.INPUT_NAME: batch}


class Int8Quantizer:
    """Static QDQ INT8 of one FP32 model, as often as the fallback needs, prepared once.

    uint8 activations, int8 per-channel weights, MinMax calibration. quant_pre_process first
    folds BatchNorm and infers shapes (it needs sympy; without it the folding is skipped and
    INT8 runs several times slower). The final Softmax stays float: quantized, the probabilities
    would come in steps of 1/255, not sum to 1, and tie where FP32 does not. Use as a context
    manager: it works in a temporary folder.

    Raises:
        ExportError: onnxruntime's tools failed.
    """

    def __init__(self, fp32: onnx.ModelProto, calibration: np.ndarray) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="edge-ssl-int8-")
        self._calibration = calibration
        folder = Path(self._tmp.name)
        source, self._prepared = folder / "fp32.onnx", folder / "prepared.onnx"
        onnx.save(fp32, source)
        try:
            quant_pre_process(str(source), str(self._prepared))
        except Exception as exc:  # onnxruntime's tools raise many unrelated types
            self.close()
            raise ExportError(f"INT8 preparation failed: {type(exc).__name__}: {exc}") from exc
        prepared = onnx.load(self._prepared)
        nodes = prepared.graph.node
        self._softmax = [n.name for n in nodes if n.op_type == "Softmax"]
        self.candidates = [n.name for n in nodes if n.op_type in FALLBACK_OPS and n.name]
        # What is quantized whenever the image's convolution is: the same model with that
        # convolution widened to 4 input channels (graph_edit.widen_first_conv); `_widening`
        # names it and the MatMul that widens it, which stays float. Kept in FP32, the
        # convolution is faster on 3 channels, so the fallback then quantizes the plain file.
        # The calibration images have the model's own size, the width the convolution sees.
        self._widened = folder / "widened.onnx"
        self._widening = graph_edit.widen_first_conv(prepared, calibration.shape[2])
        if self._widening is not None:
            onnx.save(prepared, self._widened)

    def __enter__(self) -> Int8Quantizer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._tmp.cleanup()

    def quantize(self, keep_fp32: Sequence[str] = (),
                 only: Sequence[str] | None = None,
                 calibration: np.ndarray | None = None) -> onnx.ModelProto:
        """The INT8 model with `keep_fp32` nodes left in FP32 (or with only the nodes `only`
        quantized), calibrated on `calibration` (default: the images given at construction)."""
        output = Path(self._tmp.name) / "int8.onnx"
        images = self._calibration if calibration is None else calibration
        source, floats = self._prepared, []
        if self._widening is not None:
            conv, matmul = self._widening
            if conv not in keep_fp32 and (only is None or conv in only):
                source, floats = self._widened, [matmul]
        try:
            quantize_static(
                str(source), str(output), _Batches(images),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=True,
                # 7-bit weights: x86's AVX2 u8·s8 kernel (VPMADDUBSW) adds two 8-bit products
                # into 16 bits and saturates with full-range weights, so without VNNI the
                # file would answer differently than on ARM, in a browser or on a VNNI x86.
                reduce_range=True,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_quantize=list(only) if only is not None else None,
                nodes_to_exclude=[*self._softmax, *keep_fp32, *floats],
            )
        except Exception as exc:  # onnxruntime's tools raise many unrelated types
            raise ExportError(f"INT8 quantization failed: {type(exc).__name__}: {exc}") from exc
        return _sorted_cast_first(onnx.load(output))

    def rank(self, predict: Callable[[onnx.ModelProto, np.ndarray], np.ndarray]) -> list[str]:
        """`candidates`, the most sensitive first: each quantized alone, scored by how far its
        probabilities move from FP32 (mean L1) on a few calibration images.

        One node at a time, as accuracy-aware quantization (e.g. OpenVINO NNCF's) ranks layers:
        the error of a node in isolation, not its share of the full model's error, because in a
        fully quantized network the early layers' errors drown any single later one.
        """
        images = self._calibration[:RANKING_IMAGES]
        reference = predict(onnx.load(self._prepared), images)
        scores = {}
        for name in self.candidates:
            moved = predict(self.quantize(only=[name], calibration=images), images)
            scores[name] = float(np.mean(np.abs(moved - reference).sum(axis=1)))
        return sorted(self.candidates, key=lambda name: -scores[name])


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


@dataclass(frozen=True)
class Int8Outcome:
    """The INT8 model chosen (the first within budget, else the best tried) and the evidence.

    `probabilities` are its outputs on the gate images; `tried` holds (nodes kept in FP32,
    agreement %) for every attempt, in order.
    """

    proto: onnx.ModelProto
    probabilities: np.ndarray
    fp32_nodes: tuple[str, ...]
    tried: tuple[tuple[int, float], ...]
    candidates: int


def int8_within_budget(proto: onnx.ModelProto, calibration: np.ndarray, gate: np.ndarray,
                       fp32: np.ndarray, min_agreement: float, max_fp32_nodes: int
                       ) -> Int8Outcome:
    """Quantize `proto` so that its top-1 agrees with `fp32` (FP32's probabilities on the uint8
    `gate` images) on at least `min_agreement` %, keeping at most `max_fp32_nodes` in FP32.

    Raises:
        ExportError: onnxruntime's tools failed.
    """
    def predict(model: onnx.ModelProto, pixels: np.ndarray) -> np.ndarray:
        return verify.predict(verify.session(model.SerializeToString()), pixels)

    def agreement(probabilities: np.ndarray) -> float:
        return Rate.of(probabilities.argmax(axis=1) == fp32.argmax(axis=1)).percent

    with Int8Quantizer(proto, calibration) as quantizer:
        int8 = quantizer.quantize()
        probabilities = predict(int8, gate)
        best = Int8Outcome(int8, probabilities, (), ((0, agreement(probabilities)),),
                           len(quantizer.candidates))
        if best.tried[0][1] >= min_agreement or max_fp32_nodes == 0:
            return best
        log.info(f"INT8 agrees on {best.tried[0][1]:.1f}% < {min_agreement:g}%: ranking "
            f"{len(quantizer.candidates)} nodes by sensitivity")
        ranked = quantizer.rank(predict)
        tried = list(best.tried)
        for count in range(1, min(max_fp32_nodes, len(ranked)) + 1):
            log.info(f"INT8 with {count} of at most {max_fp32_nodes} nodes in FP32")
            kept = tuple(ranked[:count])
            int8 = quantizer.quantize(keep_fp32=kept)
            probabilities = predict(int8, gate)
            tried.append((count, agreement(probabilities)))
            if tried[-1][1] > max(agreement for _, agreement in tried[:-1]):
                best = Int8Outcome(int8, probabilities, kept, (), best.candidates)
            if tried[-1][1] >= min_agreement:
                break
        return Int8Outcome(best.proto, best.probabilities, best.fp32_nodes, tuple(tried),
                           best.candidates)
