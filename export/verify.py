"""The proof that an exported file is right: checker, graph contract, Keras parity, accuracy.

tf2onnx logs failed nodes instead of failing, so these checks are the only evidence that a
conversion worked. Each returns a `Check`; the caller collects them all and raises once.
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
from edge_ssl.images import resize_array
from edge_ssl.stats import Rate

# Random ops are augmentation that leaked into the graph: it must never run at inference.
RANDOM_OPS = frozenset({"RandomUniform", "RandomUniformLike", "RandomNormal", "RandomNormalLike",
                        "Multinomial", "Bernoulli", "Dropout"})
BATCH_SIZE = 64
# The runtime's resize rounds to 8 bits (Pillow rounds after each of its two passes); the graph's
# float resize of the same frame may differ by that rounding, and no more.
PIXEL_TOLERANCE = 1.0
# An FP16 file and its twin (fixed-size, ORT format) round differently where onnxruntime fuses
# their nodes differently: a few FP16 units (2^-11 ≈ 4.9e-4 for probabilities in [0.5, 1]).
FP16_TWIN_TOLERANCE = 2e-3
# An INT8 .ort file for ARM is optimized with int8 activations allowed in QDQ groups, which x86
# runs with other kernels than the .onnx file's: their requantization rounds differently, by a
# few quantization steps (1.1e-2 measured on a demo run; the top-1 must still be the same).
INT8_ORT_TWIN_TOLERANCE = 5e-2


@dataclass(frozen=True)
class Check:
    """One verification step: what was checked, whether it passed, and the numbers.

    An `advisory` check describes how the model behaves rather than whether the file is right
    (the raw-frame agreement): failing it is reported as a warning and does not keep the file
    from being written.
    """

    name: str
    passed: bool
    detail: str
    values: dict[str, Any] = field(default_factory=dict)
    advisory: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "passed": self.passed, "advisory": self.advisory,
                "detail": self.detail, **self.values}


def check_onnx(proto: onnx.ModelProto) -> Check:
    """onnx.checker with full_check, which also runs strict shape inference."""
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        return Check("onnx.checker", False, str(exc).strip().splitlines()[0])
    return Check("onnx.checker", True, "full_check passed")


def check_contract(proto: onnx.ModelProto, num_classes: int, size: int | None = None) -> Check:
    """The graph every export promises: uint8 `[batch, height, width, 3]` (`[batch, size, size,
    3]` for a fixed-size file) → Cast first → … → float32 `[batch, C]`, and no random
    (augmentation) op anywhere."""
    graph = proto.graph
    weights = {init.name for init in graph.initializer}
    inputs = [i for i in graph.input if i.name not in weights]
    problems: list[str] = []
    names = [i.name for i in inputs]
    if names != [contract.INPUT_NAME]:
        problems.append(f"inputs are {names}, expected [{contract.INPUT_NAME!r}]")
    else:
        problems += _tensor_problems(inputs[0], onnx.TensorProto.UINT8, [None, size, size, 3])
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
    dims = "height, width" if size is None else f"{size}, {size}"
    detail = "; ".join(problems) or (
        f"uint8 [batch, {dims}, 3] → Cast → … → float32 [batch, {num_classes}], no random ops")
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


def predict(sess: ort.InferenceSession, pixels: np.ndarray,
            batch_size: int = BATCH_SIZE) -> np.ndarray:
    """uint8 `[N, H, W, 3]` → probabilities `[N, C]`, in batches."""
    return np.concatenate([
        sess.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: pixels[i:i + batch_size]})[0]
        for i in range(0, len(pixels), batch_size)
    ])


def resized(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """uint8 `[N, S, S, 3]` → `[N, height, width, 3]` with Pillow, for odd-size parity."""
    return np.stack([np.asarray(Image.fromarray(image).resize((width, height),
                                                              Image.Resampling.BILINEAR))
                     for image in pixels])


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


def compare_rebuild(trained: Callable[..., Any], rebuilt: Callable[..., Any], policy: str,
                    images: np.ndarray) -> dict[str, Any]:
    """How a mixed-precision model's float32 rebuild answers compared with the model as trained.

    Evidence, not a gate: the float32 rebuild computes what the trained weights mean without
    float16 rounding, and is what the file is checked against. The difference is what float16
    activations changed during training-time inference.
    """
    expected = np.asarray(trained(images, training=False), dtype=np.float32)
    actual = np.asarray(rebuilt(images, training=False), dtype=np.float32)
    return {"trained_precision": policy, "exported_precision": "float32",
            "images": len(images),
            "max_abs_diff_vs_trained": float(np.max(np.abs(actual - expected))),
            "top1_agreement_vs_trained": Rate.of(
                expected.argmax(axis=1) == actual.argmax(axis=1)).to_json()}


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> Rate:
    """Top-1 accuracy with its n and 95 % interval."""
    return Rate.of(probabilities.argmax(axis=1) == labels)


def camera_frames(pixels: np.ndarray, scale: int, rng: np.random.Generator) -> np.ndarray:
    """uint8 `[N, S, S, 3]` → `[N, scale·S, scale·S, 3]`: smooth bicubic upscales with sensor
    noise (σ 6 grey levels), the fine detail a non-antialiased resize would alias."""
    side = pixels.shape[1] * scale
    upscaled = np.stack([np.asarray(Image.fromarray(image).resize(
        (side, side), Image.Resampling.BICUBIC)) for image in pixels]).astype(np.float32)
    noisy = upscaled + rng.normal(0.0, 6.0, upscaled.shape).astype(np.float32)
    return np.clip(noisy, 0, 255).round().astype(np.uint8)


def check_frames(proto: onnx.ModelProto, pixels: np.ndarray, size: int, scale: int,
                 min_agreement: float, seed: int) -> list[Check]:
    """Raw frames `scale`× the native size fed to the graph, against the runtime's path (the
    frame resized to `size` by edge_ssl.images, then fed).

    Two checks. "resize rule": the graph's own resized pixels are the runtime's within
    PIXEL_TOLERANCE grey levels (the runtime rounds to 8 bits, the graph does not), which proves
    the two resize alike. "raw frames": top-1 agrees on `min_agreement` % of the frames; an
    advisory check, since a model whose answer changes under a grey level of noise disagrees on
    some frames however exact the resize.
    """
    resize = [node for node in proto.graph.node if node.op_type == "Resize"]
    if len(resize) != 1:
        return [Check("resize rule", False, f"the graph has {len(resize)} Resize nodes, "
                      "expected the preprocessing's one")]
    # The Resize output (float [N, 3, S, S]) as a second graph output.
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    probe.graph.output.append(onnx.helper.make_empty_tensor_value_info(resize[0].output[0]))
    sess = session(probe.SerializeToString())
    outputs = [contract.OUTPUT_NAME, resize[0].output[0]]
    rng = np.random.default_rng(seed)
    agree = np.zeros(len(pixels), bool)
    max_pixel = max_diff = 0.0
    for start in range(0, len(pixels), 8):  # 8 frames of 512×512 are 25 MB as float32
        frames = camera_frames(pixels[start:start + 8], scale, rng)
        raw, resized = sess.run(outputs, {contract.INPUT_NAME: frames})
        decoded = np.stack([resize_array(frame, size) for frame in frames])
        (runtime,) = sess.run(outputs[:1], {contract.INPUT_NAME: decoded})
        agree[start:start + len(frames)] = raw.argmax(axis=1) == runtime.argmax(axis=1)
        max_diff = max(max_diff, float(np.max(np.abs(raw - runtime))))
        max_pixel = max(max_pixel, float(np.max(np.abs(
            resized - decoded.transpose(0, 3, 1, 2).astype(np.float32)))))
    side = size * scale
    rule = Check("resize rule", max_pixel <= PIXEL_TOLERANCE,
                 f"{side}×{side} frames resized in the graph vs by the runtime: max |Δpixel| "
                 f"{max_pixel:.2f} {'≤' if max_pixel <= PIXEL_TOLERANCE else '>'} "
                 f"{PIXEL_TOLERANCE:g} grey level", {
                     "images": len(pixels), "frame_size": side, "max_abs_pixel_diff": max_pixel,
                     "pixel_tolerance": PIXEL_TOLERANCE})
    rate = Rate.of(agree)
    passed = rate.percent >= min_agreement
    agreement = Check(
        f"raw frames {side}×{side}", passed,
        f"{side}×{side} frames fed raw vs resized by the runtime: top-1 agrees on {rate} "
        f"{'≥' if passed else '<'} {min_agreement:g}%, max |Δp| {max_diff:.1e}", {
            "images": rate.n, "frame_size": side, "top1_agreement": rate.to_json(),
            "min_agreement": min_agreement, "max_abs_diff": max_diff}, advisory=True)
    return [rule, agreement]


def _against_fp32(fp32: np.ndarray, variant: np.ndarray, labels: np.ndarray
                  ) -> tuple[Rate, dict[str, Any]]:
    agreement = Rate.of(fp32.argmax(axis=1) == variant.argmax(axis=1))
    return agreement, {
        "images": len(labels), "top1_agreement": agreement.to_json(),
        "accuracy": accuracy(variant, labels).to_json(),
        "fp32_accuracy": accuracy(fp32, labels).to_json(),
        "max_abs_diff_vs_fp32": float(np.max(np.abs(variant - fp32)))}


def check_int8(fp32: np.ndarray, int8: np.ndarray, labels: np.ndarray, min_agreement: float,
               fp32_nodes: Iterable[str], fallback: dict[str, Any] | None = None) -> Check:
    """INT8's gate: its top-1 equals FP32's on at least `min_agreement` % of the sample.

    Agreement rather than an accuracy difference: a few hundred images give accuracies whose
    intervals span several points, so a difference of two accuracies is mostly noise, while every
    disagreement is a real change of answer; and agreement a bounds |Δaccuracy| by 100 − a.
    """
    agreement, values = _against_fp32(fp32, int8, labels)
    passed = agreement.percent >= min_agreement
    kept = list(fp32_nodes)
    detail = (f"top-1 agrees with FP32 on {agreement} of training images "
              f"{'≥' if passed else '<'} {min_agreement:g}%; their accuracy "
              f"{accuracy(int8, labels)} vs FP32 "
              f"{accuracy(fp32, labels).percent:.1f}%"
              + (f"; {len(kept)} nodes kept in FP32" if kept else ""))
    return Check("int8 agreement", passed, detail,
                 {**values, "min_agreement": min_agreement, "fp32_nodes": kept,
                  "fallback": fallback or {}})


def check_fp16(fp32: np.ndarray, fp16: np.ndarray, labels: np.ndarray,
               tolerance: float) -> Check:
    """FP16's gate: every probability within `tolerance` of FP32's."""
    agreement, values = _against_fp32(fp32, fp16, labels)
    diff = values["max_abs_diff_vs_fp32"]
    passed = diff <= tolerance
    detail = (f"max |Δp| vs FP32 {diff:.1e} {'≤' if passed else '>'} {tolerance:g} on "
              f"{len(labels)} training images; top-1 agrees on {agreement.percent:.1f}%")
    return Check("fp16 |Δp|", passed, detail, {**values, "tolerance": tolerance})


def check_twin(reference: np.ndarray, twin: np.ndarray, name: str, tolerance: float) -> Check:
    """A file derived from a verified one (fixed-size, ORT format) answers like it: every
    probability within `tolerance`, and the same top-1 on every image."""
    max_diff = float(np.max(np.abs(twin - reference)))
    mismatches = int(np.sum(twin.argmax(axis=1) != reference.argmax(axis=1)))
    passed = max_diff <= tolerance and mismatches == 0
    n = len(reference)
    return Check(f"same as {name}", passed,
                 f"max |Δp| {max_diff:.2e} {'≤' if max_diff <= tolerance else '>'} "
                 f"{tolerance:.0e}, top-1 {n - mismatches}/{n} identical",
                 {"images": n, "max_abs_diff": max_diff, "tolerance": tolerance,
                  "top1_mismatches": mismatches})


def raise_failures(results: Iterable[tuple[str, Check]]) -> None:
    """Raise one ExportVerificationError listing every failed (file, check), or return.

    Raises:
        ExportVerificationError: with each failure's numbers and tolerance.
    """
    failed = [f"{file}: {check.name}: {check.detail}" for file, check in results
              if not check.passed and not check.advisory]
    if failed:
        raise ExportVerificationError(
            f"verification failed, nothing was written ({len(failed)} problem"
            f"{'s' if len(failed) > 1 else ''}): " + " | ".join(failed)
        )
