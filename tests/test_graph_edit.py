"""export.graph_edit on small hand-built graphs: the folded rescale, the fixed-size file."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_ssl import contract
from edge_ssl.errors import ExportError
from edge_ssl.export.graph_edit import fold_rescale, to_fixed

SIZE = 6


def preprocessing_graph(offset: float | None = None, resize: bool = True) -> onnx.ModelProto:
    """uint8 NHWC → Cast → Transpose → antialiased Resize to SIZE → ·scale (+ offset) → Conv with
    zero padding → mean → Softmax, the shape of what tf2onnx writes."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
        numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "kernel"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([2], np.int64), "two"),
        numpy_helper.from_array(np.array([SIZE, SIZE], np.int64), "hw"),
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
                               strides=[2, 2]),
              helper.make_node("ReduceMean", ["features", "spatial"], ["pooled"], keepdims=0),
              helper.make_node("Softmax", ["pooled"], [contract.OUTPUT_NAME], axis=-1)]
    image = helper.make_tensor_value_info(contract.INPUT_NAME, TensorProto.UINT8,
                                          ["batch", "height", "width", 3])
    out = helper.make_tensor_value_info(contract.OUTPUT_NAME, TensorProto.FLOAT, ["batch", 4])
    model = helper.make_model(helper.make_graph(nodes, "g", [image], [out], weights),
                              opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


def run(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {contract.INPUT_NAME: images})[0]


def images(height: int = SIZE, width: int = SIZE) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (5, height, width, 3), dtype=np.uint8)


def test_fold_rescale_is_exact_with_zero_padding() -> None:
    model = preprocessing_graph()
    before = run(model, images(9, 13))

    assert fold_rescale(model)

    assert "Mul" not in {n.op_type for n in model.graph.node}
    assert "scale" not in {i.name for i in model.graph.initializer}  # nothing else used it
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_allclose(run(model, images(9, 13)), before, atol=1e-6)


def test_fold_rescale_leaves_an_offset_alone() -> None:
    # With x·s + o, the convolution's padded zeros stand for −o/s: folding would not be exact.
    model = preprocessing_graph(offset=-1.0)
    before = model.SerializeToString()

    assert not fold_rescale(model)

    assert model.SerializeToString() == before


def test_fixed_file_drops_the_resize_and_keeps_the_answers() -> None:
    model = preprocessing_graph()

    fixed = to_fixed(model, SIZE)

    ops = [n.op_type for n in fixed.graph.node]
    assert ops == ["Cast", "Transpose", "Mul", "Conv", "ReduceMean", "Softmax"]
    dims = [d.dim_param or d.dim_value for d in fixed.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", SIZE, SIZE, 3]
    assert {i.name for i in fixed.graph.initializer} == {"scale", "kernel", "spatial"}
    onnx.checker.check_model(fixed, full_check=True)
    # At the model's own size the antialiased resize is an identity.
    np.testing.assert_allclose(run(fixed, images()), run(model, images()), atol=1e-6)
    assert "Resize" in {n.op_type for n in model.graph.node}  # the source is untouched


def test_fixed_file_needs_exactly_one_resize() -> None:
    with pytest.raises(ExportError, match="expected one Resize inside the graph, found 0"):
        to_fixed(preprocessing_graph(resize=False), SIZE)
