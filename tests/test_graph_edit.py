"""export.graph_edit on small hand-built graphs: the folded rescale, the fixed-size file, the
image's convolution widened to four channels."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import numpy_helper
from onnx_models import preprocessing_graph

from edge_ssl import contract
from edge_ssl.errors import ExportError
from edge_ssl.export.graph_edit import fold_rescale, to_fixed, widen_first_conv

SIZE = 6


def run(model: onnx.ModelProto, images: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {contract.INPUT_NAME: images})[0]


def images(height: int = SIZE, width: int = SIZE) -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (5, height, width, 3), dtype=np.uint8)


def test_fold_rescale_is_exact_with_zero_padding() -> None:
    model = preprocessing_graph(size=SIZE)
    before = run(model, images(9, 13))

    assert fold_rescale(model)

    assert "Mul" not in {n.op_type for n in model.graph.node}
    assert "scale" not in {i.name for i in model.graph.initializer}  # nothing else used it
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_allclose(run(model, images(9, 13)), before, atol=1e-6)


def test_fold_rescale_leaves_an_offset_alone() -> None:
    # With x·s + o, the convolution's padded zeros stand for −o/s: folding would not be exact.
    model = preprocessing_graph(offset=-1.0, size=SIZE)
    before = model.SerializeToString()

    assert not fold_rescale(model)

    assert model.SerializeToString() == before


def test_fixed_file_drops_the_resize_and_keeps_the_answers() -> None:
    model = preprocessing_graph(size=SIZE)

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
        to_fixed(preprocessing_graph(resize=False, size=SIZE), SIZE)


@pytest.mark.parametrize(("size", "resize", "height", "width", "row"),
                         [(SIZE, True, SIZE, SIZE, 3), (8, False, 8, 8, 12), (8, True, 9, 13, 12)])
def test_widened_image_convolution_keeps_the_answers(size: int, resize: bool, height: int,
                                                     width: int, row: int) -> None:
    # At 6 (no multiple of 4) the MatMul widens one pixel per row, at 8 four; the Resize makes
    # the model's size out of any other.
    model = preprocessing_graph(size=size, resize=resize)
    pixels = images(height, width)
    before = run(model, pixels)

    assert widen_first_conv(model, size) == ("features_conv", "features_conv/widen/matmul")

    kernels = {i.name: i for i in model.graph.initializer}
    assert list(kernels["kernel"].dims) == [4, 4, 3, 3]  # 4 filters of 4 channels, 3×3
    (pad,) = [numpy_helper.to_array(kernels[n.input[1]]) for n in model.graph.node
              if n.op_type == "MatMul"]
    assert pad.shape == (row, row // 3 * 4)
    onnx.checker.check_model(model, full_check=True)
    np.testing.assert_allclose(run(model, pixels), before, atol=1e-6)
    assert run(model, pixels[:0]).shape == (0, 4)  # an empty batch still answers
    assert widen_first_conv(model, size) is None  # no convolution reads 3 channels any more
