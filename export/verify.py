"""The proof that an exported file is right: checker, graph contract, Keras parity, accuracy.

tf2onnx logs failed nodes instead of failing, so these checks are the only evidence that a
conversion worked (style §7). Each returns a `Check`; the caller collects them all and raises once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from PIL import Image

from edge_ssl import contract
from edge_ssl.errors import ExportVerificationError

# Random ops are augmentation that leaked into the graph: it must never run at inference.
RANDOM_OPS = frozenset({"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike",
                        "Multinomial", "Bernoulli", "Dropout"})
BATCH_SIZE = 64


@dataclass(frozen=True)
class Check:
    """One verification step: what was checked, whether it passed, and the numbers."""

    name: str
    passed: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "passed": self.passed, "detail": self.detail, **self.values}


def check_onnx(proto: onnx.ModelProto) -> Check:
    """onnx.checker with full_check, which also runs strict shape inference."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return Check("onnx.checker", False, str(exc).strip().splitlines()[0])
    return Check("onnx.checker", True, "full_check passed")


def check_contract(proto: onnx.ModelProto, num_classes: int) -> Check:
    """The graph design §8 promises: uint8 `[batch, height, width, 3]` → Cast first → … →
    float32 `[batch, C]`, and no random (augmentation) op anywhere."""
    graph = proto.graph
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    problems: list[str] = []
    names = [i.name for i in inputs]
    if names != [contract.INPUT_NAME]:
        problems.append(f"inputs are {names}, expected [{contract.INPUT_NAME!r}]")
    else:
        problems += _tensor_problems(inputs[0], onnx.TensorProto.UINT8, [None, None, None, 3])
        consumers = [n for n in graph.node if contract.INPUT_NAME in n.input]
        if not graph.node or graph.node[0].op_type != "Cast" or consumers != [graph.node[0]]:
            problems.append("the input does not feed exactly one Cast as the first node")
    if [o.name for o in graph.output] != [contract.OUTPUT_NAME]:
        problems.append(f"outputs are {[o.name for o in graph.output]}, "
                        f"expected [{contract.OUTPUT_NAME!r}]")
    else:
        problems += _tensor_problems(graph.output[0], onnx.TensorProto.FLOAT, [None, num_classes])
    random_ops = sorted({n.op_type for n in graph.node} & RANDOM_OPS)
    if random_ops:
        problems.append(f"augmentation ops in the graph: {', '.join(random_ops)}")
    detail = "; ".join(problems) or (
        f"uint8 [batch, height, width, 3] → Cast → … → float32 [batch, {num_classes}], "
        "no random ops")
    return Check("graph contract", not problems, detail)


def _tensor_problems(value: onnx.ValueInfoProto, elem_type: int,
                     dims: list[int | None]) -> list[str]:
    # None in `dims` means the dimension must be dynamic.
    tensor = value.type.tensor_type
    actual = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
    problems = []
    if tensor.elem_type != elem_type:
        problems.append(f"{value.name} is {onnx.TensorProto.DataType.Name(tensor.elem_type)}, "
                        f"expected {onnx.TensorProto.DataType.Name(elem_type)}")
    if actual != dims:
        problems.append(f"{value.name} has shape {actual}, expected {dims} (None = dynamic)")
    return problems


def session(model: bytes) -> ort.InferenceSession:
    """A CPU session with the default (full) graph optimisation the runtime also uses."""
    options = ort.SessionOptions()
    options.log_severity_level = 3  # onnxruntime's warnings are not the user's business
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def predict(sess: ort.InferenceSession, images: np.ndarray) -> np.ndarray:
    """uint8 `[N, H, W, 3]` → probabilities `[N, C]`, in batches."""
    return np.concatenate([
        sess.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images[i:i + BATCH_SIZE]})[0]
        for i in range(0, len(images), BATCH_SIZE)
    ])


def resized(images: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 `[N, S, S, 3]` → `[N, height, width, 3]` with Pillow, for odd-size parity."""
    return np.stack([np.asarray(Image.fromarray(image).resize((width, height),
                                                              Image.Resampling.BILINEAR))
                     for image in images])


def check_parity(reference: Callable[[np.ndarray], np.ndarray], sess: ort.InferenceSession,
                 images: np.ndarray, tolerance: float) -> Check:
    """Keras (`reference`) and onnxruntime on the same uint8 batch: max |Δp| and top-1.

    A top-1 difference where Keras' two best classes are within `tolerance` of each other is a
    tie no two float implementations order alike; it is counted (`top1_ties`), not failed.
    """
    expected = np.asarray(reference(images), dtype=np.float32)
    actual = predict(sess, images)
    n, height, width = images.shape[:3]
    name = f"parity {height}×{width} batch {n}"
    if actual.shape != expected.shape:
        return Check(name, False, f"output shape {actual.shape}, Keras gives {expected.shape}")
    max_diff = float(np.max(np.abs(actual - expected)))
    top2 = np.sort(expected, axis=1)[:, -2:] if expected.shape[1] > 1 else None
    tied = (top2[:, 1] - top2[:, 0] <= tolerance) if top2 is not None else np.zeros(n, bool)
    differ = expected.argmax(axis=1) != actual.argmax(axis=1)
    mismatches, ties = int(np.sum(differ & ~tied)), int(np.sum(differ & tied))
    passed = bool(max_diff <= tolerance) and mismatches == 0
    detail = (f"max |Δp| {max_diff:.2e} {'≤' if max_diff <= tolerance else '>'} {tolerance:.0e}, "
              f"top-1 {n - mismatches - ties}/{n} identical" + (f" ({ties} ties)" if ties else ""))
    return Check(name, passed, detail, {
        "images": n, "height": height, "width": width, "max_abs_diff": max_diff,
        "tolerance": tolerance, "top1_mismatches": mismatches, "top1_ties": ties})


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in percent."""
    return float(np.mean(probabilities.argmax(axis=1) == labels) * 100.0)


def check_variant(precision: str, fp32: np.ndarray, variant: np.ndarray, labels: np.ndarray,
                  max_drop: float) -> Check:
    """A reduced-precision file against FP32 on the validation images: the accuracy gate."""
    fp32_accuracy, variant_accuracy = accuracy(fp32, labels), accuracy(variant, labels)
    drop = fp32_accuracy - variant_accuracy
    agreement = float(np.mean(fp32.argmax(axis=1) == variant.argmax(axis=1)) * 100.0)
    passed = bool(drop <= max_drop)
    detail = (f"accuracy {variant_accuracy:.2f}% vs FP32 {fp32_accuracy:.2f}% on {len(labels)} "
              f"images: drop {drop:+.2f} {'≤' if passed else '>'} {max_drop:g} points; "
              f"top-1 agrees with FP32 on {agreement:.1f}%")
    return Check(f"{precision} accuracy", passed, detail, {
        "images": len(labels), "accuracy": variant_accuracy, "fp32_accuracy": fp32_accuracy,
        "drop_points": drop, "max_drop_points": max_drop, "top1_agreement": agreement,
        "max_abs_diff_vs_fp32": float(np.max(np.abs(variant - fp32)))})


def raise_failures(results: Iterable[tuple[str, Check]]) -> None:
    """Raise one ExportVerificationError listing every failed (file, check), or return.

    Raises:
        ExportVerificationError: with each failure's numbers and tolerance.
    """
    failed = [f"{file}: {check.name}: {check.detail}" for file, check in results
              if not check.passed]
    if failed:
        raise ExportVerificationError(
            f"verification failed, nothing was written ({len(failed)} problem"
            f"{'s' if len(failed) > 1 else ''}): " + " | ".join(failed)
        )
