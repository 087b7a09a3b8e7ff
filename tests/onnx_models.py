"""Tiny ONNX models that follow edge-ssl's export contract, built with onnx.helper in milliseconds.

The graph is the exported one in miniature: uint8 [N, H, W, 3] → Cast → bilinear Resize to S×S
→ rescale → a linear layer over the S·S·3 pixels → Softmax. The linear layer's weights are the
caller's, so a test knows which label an image must get (see `colour_weights`,
`orientation_weights` and `expected_probabilities`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from edge_ssl import contract

SIZE = 8
COLOURS = ("red", "green", "blue")
RESCALE = {"scale": 1.0 / 255.0, "offset": 0.0}


def colour_weights(size: int = SIZE, gain: float = 10.0) -> np.ndarray:
    """Weights [S·S·3, 3]: logit c = gain × the mean of channel c (labels red, green, blue)."""
    weights = np.zeros((size, size, 3, 3), np.float32)
    for c in range(3):
        weights[:, :, c, c] = gain / (size * size)
    return weights.reshape(-1, 3)


def orientation_weights(size: int = SIZE, gain: float = 10.0) -> np.ndarray:
    """Weights [S·S·3, 4] for labels 0/90/180/270: where the bright half of the picture is.

    An upright scene is bright on top; turned 90° counter-clockwise its bright side is on the
    left, at 180° at the bottom, at 270° on the right.
    """
    half = size // 2
    rows = np.zeros((size, size), np.float32)
    rows[:half] = 1.0
    rows[half:] = -1.0
    sides = [rows, rows.T, -rows, -rows.T]  # bright top, left, bottom, right
    weights = np.stack([np.repeat(s[:, :, None], 3, axis=2) for s in sides], axis=-1)
    return (weights * gain / (size * size * 3)).reshape(-1, 4)


def expected_probabilities(images: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """What the model computes for `uint8 [N, S, S, 3]` images already at the native size."""
    x = images.reshape(len(images), -1).astype(np.float32) * RESCALE["scale"] + RESCALE["offset"]
    logits = x @ weights
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def metadata(labels: Sequence[str], task: str = contract.TASK_CLASSIFICATION,
             size: int = SIZE) -> dict[str, object]:
    """The metadata `edge-ssl export` writes (values before JSON encoding)."""
    return {
        contract.META_TASK: task,
        contract.META_LABELS: list(labels),
        contract.META_IMAGE_SIZE: size,
        contract.META_RESCALE: RESCALE,
        contract.META_INTERPOLATION: "bilinear",
        contract.META_VERSION: "0.1.0",
        contract.META_RUN: "test-run",
        contract.META_EXPORTED_AT: "2024-01-01T00:00:00Z",
        contract.META_PRECISION: "fp32",
    }


def build_model(
    path: Path,
    weights: np.ndarray | None = None,
    labels: Sequence[str] = COLOURS,
    *,
    task: str = contract.TASK_CLASSIFICATION,
    size: int = SIZE,
    meta: Mapping[str, object] | None = None,
    input_type: int = TensorProto.UINT8,
    input_name: str = contract.INPUT_NAME,
) -> Path:
    """Write a contract model to `path`.

    Args:
        weights: [S·S·3, len(labels)]; `colour_weights(size)` when None.
        meta: metadata values to JSON-encode; the export's full set when None, `{}` for none.
        input_type: the input's element type; anything but UINT8 breaks the contract.
        input_name: the input's name; anything but `image` breaks the contract.
    """
    weights = colour_weights(size) if weights is None else weights.astype(np.float32)
    meta = metadata(labels, task, size) if meta is None else meta
    image = helper.make_tensor_value_info(input_name, input_type, ["batch", "height", "width", 3])
    probabilities = helper.make_tensor_value_info(
        contract.OUTPUT_NAME, TensorProto.FLOAT, ["batch", len(labels)])
    initializers = [
        numpy_helper.from_array(np.array([0], np.int64), "start"),
        numpy_helper.from_array(np.array([1], np.int64), "end"),
        numpy_helper.from_array(np.array([size, size, 3], np.int64), "hwc"),
        numpy_helper.from_array(np.array(RESCALE["scale"], np.float32), "scale"),
        numpy_helper.from_array(np.array(RESCALE["offset"], np.float32), "offset"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat"),
        numpy_helper.from_array(weights, "weights"),
    ]
    nodes = [
        helper.make_node("Cast", [input_name], ["x"], to=TensorProto.FLOAT),
        # Resize's sizes must be 4-D: the batch comes from the input's shape.
        helper.make_node("Shape", [input_name], ["shape"]),
        helper.make_node("Slice", ["shape", "start", "end"], ["n"]),
        helper.make_node("Concat", ["n", "hwc"], ["sizes"], axis=0),
        helper.make_node("Resize", ["x", "", "", "sizes"], ["resized"], mode="linear",
                         coordinate_transformation_mode="half_pixel"),
        helper.make_node("Mul", ["resized", "scale"], ["scaled"]),
        helper.make_node("Add", ["scaled", "offset"], ["rescaled"]),
        helper.make_node("Reshape", ["rescaled", "flat"], ["features"]),
        helper.make_node("MatMul", ["features", "weights"], ["logits"]),
        helper.make_node("Softmax", ["logits"], [contract.OUTPUT_NAME], axis=-1),
    ]
    graph = helper.make_graph(nodes, "edge_ssl_test", [image], [probabilities], initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="edge-ssl-tests")
    model.ir_version = 8  # readable by every onnxruntime edge-ssl supports
    helper.set_model_props(model, {k: json.dumps(v) for k, v in meta.items()})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def rotation_model(path: Path, size: int = SIZE) -> Path:
    """A `pretext.onnx` stand-in: task rotation, labels 0/90/180/270, an orientation detector."""
    return build_model(path, orientation_weights(size), contract.ROTATION_LABELS,
                       task=contract.TASK_ROTATION, size=size)


def not_onnx(path: Path) -> Path:
    """A file named .onnx that holds text."""
    path.write_text("this is not a model\n", encoding="utf-8")
    return path


def preprocessing_graph(size: int, offset: float | None = None,
                        resize: bool = True) -> onnx.ModelProto:
    """uint8 NHWC → Cast → Transpose → antialiased Resize to `size` → ·scale (+ offset) → Conv with
    zero padding → mean → Softmax, the shape of what tf2onnx writes."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "kernel"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([2], np.int64), "two"),
        numpy_helper.from_array(np.array([size, size], np.int64), "hw"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "spatial"),
    ]
    nodes = [helper.make_node("Cast", [contract.INPUT_NAME], ["x"], to=TensorProto.FLOAT),
             helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2])]
    if resize:
        nodes += [helper.make_node("Shape", ["nchw"], ["shape"]),
                  helper.make_node("Slice", ["shape", "zero", "two"], ["nc"]),
                  helper.make_node("Concat", ["nc", "hw"], ["sizes"], axis=0),
                  helper.make_node("Resize", ["nchw", "", "", "sizes"], ["resized"],
                                   mode="linear", coordinate_transformation_mode="half_pixel",
                                   antialias=1, exclude_outside=1)]
    nodes.append(helper.make_node("Mul", ["resized" if resize else "nchw", "scale"], ["scaled"]))
    conv_input = "scaled"
    if offset is not None:
        weights.append(numpy_helper.from_array(np.array(offset, np.float32), "offset"))
        nodes.append(helper.make_node("Add", ["scaled", "offset"], ["shifted"]))
        conv_input = "shifted"
    nodes += [helper.make_node("Conv", [conv_input, "kernel"], ["features"], pads=[1, 1, 1, 1],
                               strides=[2, 2], name="features_conv"),
              helper.make_node("ReduceMean", ["features", "spatial"], ["pooled"], keepdims=0,
                               name="pool"),
              helper.make_node("Softmax", ["pooled"], [contract.OUTPUT_NAME], axis=-1)]
    image = helper.make_tensor_value_info(contract.INPUT_NAME, TensorProto.UINT8,
                                          ["batch", "height", "width", 3])
    out = helper.make_tensor_value_info(contract.OUTPUT_NAME, TensorProto.FLOAT, ["batch", 4])
    model = helper.make_model(helper.make_graph(nodes, "g", [image], [out], weights),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model
