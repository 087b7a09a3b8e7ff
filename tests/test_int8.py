"""The INT8 fallback: nodes kept in FP32, most sensitive first, until INT8 agrees with FP32."""

from __future__ import annotations

import numpy as np
import onnx
import onnx_models
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_ssl import contract
from edge_ssl.export import quantize, verify
from edge_ssl.export.quantize import Int8Quantizer

# One pixel: on CPUs without VNNI (AVX2 only), onnxruntime's u8×s8 kernels add adjacent pairs of
# products in 16 bits and saturate when both are large. With 8×8 images the colour MatMul reads
# 64 same-channel weights in a row and saturated on such a CPU, which made it, not the outlier,
# the node that INT8 ruins; with one pixel each pair holds one non-zero weight.
SIZE = 1
OUTLIER = 1000.0


def outlier_model() -> onnx.ModelProto:
    """Mean colour → h = [r, g, b, 1000] → logits r, g, b: a contract model INT8 ruins.

    The constant 1000 stretches the per-tensor uint8 range of `h` to a step of about 4, which
    the colour features (0–10) cannot survive; kept in FP32, the Add that makes `h` and the
    MatMul that reads it leave `h` unquantized and INT8 gives FP32's answers again.
    """
    colour = np.zeros((SIZE, SIZE, 3, 4), np.float32)
    for c in range(3):
        colour[:, :, c, c] = 10.0 / (SIZE * SIZE)
    readout = np.vstack([np.eye(3, dtype=np.float32), np.zeros((1, 3), np.float32)])
    initializers = [
        numpy_helper.from_array(np.array([0], np.int64), "start"),
        numpy_helper.from_array(np.array([1], np.int64), "end"),
        numpy_helper.from_array(np.array([3, SIZE, SIZE], np.int64), "chw"),
        numpy_helper.from_array(np.array(1 / 255, np.float32), "scale"),
        numpy_helper.from_array(np.array([0, -1], np.int64), "flat"),
        numpy_helper.from_array(colour.transpose(2, 0, 1, 3).reshape(-1, 4), "colour"),
        numpy_helper.from_array(np.array([0, 0, 0, OUTLIER], np.float32), "bias"),
        numpy_helper.from_array(readout, "readout"),
    ]
    nodes = [
        helper.make_node("Cast", ["image"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Transpose", ["x"], ["nchw"], perm=[0, 3, 1, 2]),
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Slice", ["shape", "start", "end"], ["n"]),
        helper.make_node("Concat", ["n", "chw"], ["sizes"], axis=0),
        helper.make_node("Resize", ["nchw", "", "", "sizes"], ["resized"], mode="linear",
                         antialias=1, exclude_outside=1),
        helper.make_node("Mul", ["resized", "scale"], ["scaled"]),
        helper.make_node("Reshape", ["scaled", "flat"], ["features"]),
        helper.make_node("MatMul", ["features", "colour"], ["means"], name="colour"),
        # A Relu (an identity here) keeps quant_pre_process from fusing MatMul + Add into Gemm.
        helper.make_node("Relu", ["means"], ["positive"]),
        helper.make_node("Add", ["positive", "bias"], ["h"], name="outlier"),
        helper.make_node("MatMul", ["h", "readout"], ["logits"], name="readout"),
        helper.make_node("Softmax", ["logits"], [contract.OUTPUT_NAME], axis=-1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "outlier", [helper.make_tensor_value_info(
            "image", TensorProto.UINT8, ["batch", "height", "width", 3])],
        [helper.make_tensor_value_info(contract.OUTPUT_NAME, TensorProto.FLOAT, ["batch", 3])],
        initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model, full_check=True)
    return model


@pytest.fixture(scope="module")
def setup() -> tuple[onnx.ModelProto, np.ndarray, np.ndarray, np.ndarray]:
    """(model, calibration images, gate images, FP32's probabilities on the gate images)."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (96, 1, 1, 3)).repeat(SIZE, 1).repeat(SIZE, 2)
    images = np.clip(pixels + rng.integers(-20, 21, pixels.shape), 0, 255).astype(np.uint8)
    model = outlier_model()
    fp32 = verify.predict(verify.session(model.SerializeToString()), images[32:])
    return model, images[:32], images[32:], fp32


def test_fallback_keeps_the_sensitive_nodes_in_fp32(
        setup: tuple[onnx.ModelProto, np.ndarray, np.ndarray, np.ndarray]) -> None:
    model, calibration, gate, fp32 = setup

    outcome = quantize.int8_within_budget(model, calibration, gate, fp32, min_agreement=100.0,
                                          max_fp32_nodes=3)

    assert outcome.candidates == 3  # the two MatMuls and the Add; never the Softmax
    assert sorted(outcome.fp32_nodes) == ["outlier", "readout"]
    assert outcome.tried[0][0] == 0 and outcome.tried[0][1] < 90  # the full INT8 model
    assert outcome.tried[-1] == (2, 100.0)
    agree = outcome.probabilities.argmax(1) == fp32.argmax(1)
    assert agree.all()
    kept = {n.name for n in outcome.proto.graph.node if n.op_type in ("Add", "MatMul")}
    dequantized = {o for n in outcome.proto.graph.node if n.op_type == "DequantizeLinear"
                   for o in n.output}
    colour = next(n for n in outcome.proto.graph.node if n.name == "colour")
    assert kept == {"colour", "outlier", "readout"} and colour.input[1] in dequantized


def test_without_fallback_the_best_is_the_full_int8_model(
        setup: tuple[onnx.ModelProto, np.ndarray, np.ndarray, np.ndarray]) -> None:
    model, calibration, gate, fp32 = setup

    outcome = quantize.int8_within_budget(model, calibration, gate, fp32, min_agreement=100.0,
                                          max_fp32_nodes=0)

    assert outcome.fp32_nodes == () and len(outcome.tried) == 1
    assert outcome.tried[0][1] < 90


def test_ranking_puts_the_nodes_that_quantize_badly_first(
        setup: tuple[onnx.ModelProto, np.ndarray, np.ndarray, np.ndarray]) -> None:
    model, calibration, _, _ = setup

    def predict(proto: onnx.ModelProto, pixels: np.ndarray) -> np.ndarray:
        return verify.predict(verify.session(proto.SerializeToString()), pixels)

    with Int8Quantizer(model, calibration) as quantizer:
        ranked = quantizer.rank(predict)

    assert sorted(ranked[:2]) == ["outlier", "readout"] and ranked[2] == "colour"


def test_the_image_convolution_is_quantized_on_four_channels(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # onnxruntime's fast INT8 convolution reads input channels in multiples of 4.
    model = onnx_models.preprocessing_graph(size=8, resize=False)
    images = np.random.default_rng(2).integers(0, 256, (24, 8, 8, 3), dtype=np.uint8)

    def weights(proto: onnx.ModelProto) -> tuple[list[int], set[str]]:
        """The convolution's kernel dims, and the op types feeding the MatMuls."""
        graph = proto.graph
        made = {out: n for n in graph.node for out in n.output}
        consts = {i.name: i for i in graph.initializer}
        (conv,) = [n for n in graph.node if n.op_type == "Conv"]
        kernel = made[conv.input[1]].input[0] if conv.input[1] in made else conv.input[1]
        feeding = {made[name].op_type for n in graph.node if n.op_type == "MatMul"
                   for name in n.input if name in made}
        return list(consts[kernel].dims), feeding

    with Int8Quantizer(model, images[:16]) as quantizer:
        widened = quantizer.quantize()
        in_fp32 = quantizer.quantize(keep_fp32=["features_conv"])
        alone = quantizer.quantize(only=["features_conv"])  # how rank() scores it
        without = quantizer.quantize(only=["pool"])  # another node alone: the plain file
    monkeypatch.setattr(quantize.graph_edit, "widen_first_conv", lambda *_: None)
    with Int8Quantizer(model, images[:16]) as quantizer:
        plain = quantizer.quantize()

    assert weights(widened) == ([4, 4, 3, 3], {"Reshape"})  # the MatMul reads floats
    assert weights(alone) == ([4, 4, 3, 3], {"Reshape"})
    assert weights(in_fp32) == ([4, 3, 3, 3], set()) and weights(plain)[0] == [4, 3, 3, 3]
    assert weights(without)[0] == [4, 3, 3, 3]
    answers = [verify.predict(verify.session(p.SerializeToString()), images[16:])
               for p in (widened, plain)]
    np.testing.assert_allclose(answers[0], answers[1], atol=1e-6)  # a zero channel adds nothing
