"""INT8 that keeps the FP32 model's answers: quantize, measure agreement, fall back node by node.

When the fully quantized model's top-1 agrees with FP32 on fewer of the gate images than the
budget asks, the nodes ranked most sensitive are kept in FP32, one more at a time, each attempt
quantized again through onnxruntime's public `quantize_static` (`nodes_to_exclude`), until the
budget is met or the allowed number of FP32 nodes is used up (accuracy-aware quantization, as
OpenVINO NNCF's `quantize_with_accuracy_control` does).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx

from edge_ssl.export import verify
from edge_ssl.export.quantize import Int8Quantizer
from edge_ssl.stats import Rate


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


def run(proto: onnx.ModelProto, calibration: np.ndarray, gate: np.ndarray, fp32: np.ndarray,
        min_agreement: float, max_fp32_nodes: int,
        log: Callable[[str], None] = lambda _: None) -> Int8Outcome:
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
        log(f"INT8 agrees on {best.tried[0][1]:.1f}% < {min_agreement:g}%: ranking "
            f"{len(quantizer.candidates)} nodes by sensitivity")
        ranked = quantizer.rank(predict)
        tried = list(best.tried)
        for count in range(1, min(max_fp32_nodes, len(ranked)) + 1):
            log(f"INT8 with {count} of at most {max_fp32_nodes} nodes in FP32")
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
