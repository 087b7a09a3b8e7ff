"""Edits of a converted ONNX graph that remove run-time work the export can do once, or let
onnxruntime use a faster kernel.

Every edit is exact (or exact up to float rounding), and every file it produces goes through the
same checks as any other: the parity check against Keras for the FP32 files, the INT8 gate for
the INT8 ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from edge_ssl import contract
from edge_ssl.errors import ExportError

RGB, WIDE = 3, 4  # the image's channels, and as many as onnxruntime's fast INT8 kernel takes
PIXELS_PER_ROW = 4  # pixels per row of the MatMul that widens the image (see widen_first_conv)


def fold_rescale(proto: onnx.ModelProto) -> bool:
    """Fold the preprocessing's `x · scale` into the first convolution's weights, in place.

    conv(x · s, W) = conv(x, W · s) holds for the convolution's zero padding too, since 0 · s = 0;
    with an offset (x · s + o) it would not (a padded 0 would stand for the pixel value −o/s), so
    only a Mul by one constant feeding one Conv directly is folded. Returns whether it folded.
    """
    graph = proto.graph
    weights = {init.name: init for init in graph.initializer}
    for mul in graph.node:
        if mul.op_type != "Mul":
            continue
        scale_name = next((name for name in mul.input if name in weights), None)
        consumers = _consumers(graph, mul.output[0])
        if scale_name is None or len(consumers) != 1 or consumers[0].op_type != "Conv":
            continue
        conv = consumers[0]
        scale = numpy_helper.to_array(weights[scale_name])
        kernel = weights.get(conv.input[1])
        if (scale.size != 1 or kernel is None or conv.input[0] != mul.output[0]
                or len(_consumers(graph, kernel.name)) != 1):
            continue
        original = numpy_helper.to_array(kernel)
        folded = (original.astype(np.float64) * float(scale.reshape(()))).astype(original.dtype)
        kernel.CopyFrom(numpy_helper.from_array(folded, kernel.name))
        (data,) = [name for name in mul.input if name != scale_name]
        conv.input[0] = data
        graph.node.remove(mul)
        _prune(proto)
        return True
    return False


def to_fixed(proto: onnx.ModelProto, size: int) -> onnx.ModelProto:
    """The same model for uint8 `[N, size, size, 3]` only, without the graph's Resize.

    At the model's own size the antialiased resize is an identity, so removing it changes no
    answer, and the file no longer needs an op that TensorRT, WebGPU and WebNN refuse
    (`antialias=1`). Works on FP32, INT8 (QDQ) and FP16 files alike: whatever wraps the Resize
    (a QuantizeLinear pair, a Cast) stays and sees the same values.

    Raises:
        ExportError: the graph has not exactly one Resize, or it is the graph's output.
    """
    fixed = onnx.ModelProto()
    fixed.CopyFrom(proto)
    graph = fixed.graph
    resizes = [node for node in graph.node if node.op_type == "Resize"]
    if len(resizes) != 1 or resizes[0].output[0] in {o.name for o in graph.output}:
        raise ExportError(f"expected one Resize inside the graph, found {len(resizes)}; the "
                          "fixed-size file cannot be derived from this export.")
    (resize,) = resizes
    for node in _consumers(graph, resize.output[0]):
        node.input[:] = [resize.input[0] if name == resize.output[0] else name
                         for name in node.input]
    graph.node.remove(resize)
    _prune(fixed)
    (image,) = [i for i in graph.input if i.name == contract.INPUT_NAME]
    for dim in image.type.tensor_type.shape.dim[1:3]:
        dim.Clear()
        dim.dim_value = size
    return fixed


def widen_first_conv(proto: onnx.ModelProto, size: int) -> tuple[str, str] | None:
    """Give the convolution that reads the RGB image a fourth input channel of zeros, in place.

    onnxruntime's fast INT8 convolution on x86 (MLAS's indirect "ConvSym" kernel) takes input
    channels in multiples of 4; on 3 it falls back to im2col and a GEMM, slower than FP32's
    convolution (docs/benchmarks.md has the numbers). A MatMul by a 0/1 matrix appends the zero
    channel in NHWC, four pixels per row when `size` (the width reaching the convolution: the
    model's own) allows, and the kernel gets a zero slice, so every sum is the same. The
    Transposes around the MatMul cancel against the graph's own in onnxruntime's layout
    optimizer. FP32 files are left alone: their first convolution is faster on 3 channels.

    Returns the names of the convolution and of the MatMul, which quantizing must leave in float;
    None when no convolution reads 3 channels.
    """
    graph = proto.graph
    weights = {init.name: init for init in graph.initializer}
    found = next(((index, conv) for index, conv in enumerate(graph.node)
                  if _reads_rgb(graph, conv, weights)), None)
    if found is None:
        return None
    index, conv = found
    kernel = weights[conv.input[1]]
    original = numpy_helper.to_array(kernel)
    wide = np.zeros((original.shape[0], WIDE, *original.shape[2:]), original.dtype)
    wide[:, :RGB] = original
    kernel.CopyFrom(numpy_helper.from_array(wide, kernel.name))
    pixels = PIXELS_PER_ROW if size % PIXELS_PER_ROW == 0 else 1
    name = f"{conv.name or 'conv'}/widen"
    # Widths are explicit, not -1: a reshape of an empty batch cannot infer a -1.
    graph.initializer.extend([
        numpy_helper.from_array(np.kron(np.eye(pixels, dtype=np.float32),
                                        np.eye(RGB, WIDE, dtype=np.float32)), f"{name}/pad"),
        numpy_helper.from_array(np.array([0, 0, size // pixels, RGB * pixels], np.int64),
                                f"{name}/rows_shape"),
        numpy_helper.from_array(np.array([0, 0, size, WIDE], np.int64), f"{name}/nhwc_shape")])

    def step(op: str, inputs: list[str], output: str, **attributes: Any) -> onnx.NodeProto:
        return helper.make_node(op, inputs, [f"{name}/{output}"], name=f"{name}/{output}",
                                **attributes)

    nodes = [step("Transpose", [conv.input[0]], "to_nhwc", perm=[0, 2, 3, 1]),
             step("Reshape", [f"{name}/to_nhwc", f"{name}/rows_shape"], "rows"),
             step("MatMul", [f"{name}/rows", f"{name}/pad"], "matmul"),
             step("Reshape", [f"{name}/matmul", f"{name}/nhwc_shape"], "nhwc"),
             step("Transpose", [f"{name}/nhwc"], "to_nchw", perm=[0, 3, 1, 2])]
    for offset, node in enumerate(nodes):
        graph.node.insert(index + offset, node)
    conv.input[0] = f"{name}/to_nchw"
    return conv.name, f"{name}/matmul"


def _reads_rgb(graph: onnx.GraphProto, node: onnx.NodeProto,
               weights: dict[str, onnx.TensorProto]) -> bool:
    """Whether `node` is an ordinary convolution over 3 channels with a kernel of its own."""
    kernel = weights.get(node.input[1]) if node.op_type == "Conv" else None
    return (kernel is not None and len(kernel.dims) == 4 and kernel.dims[1] == RGB
            and _attribute(node, "group", 1) == 1 and len(_consumers(graph, kernel.name)) == 1)


def _attribute(node: onnx.NodeProto, name: str, default: int) -> int:
    found = [a for a in node.attribute if a.name == name]
    return int(helper.get_attribute_value(found[0])) if found else default


def _consumers(graph: onnx.GraphProto, tensor: str) -> list[onnx.NodeProto]:
    return [node for node in graph.node if tensor in node.input]


def _prune(proto: onnx.ModelProto) -> None:
    """Drop nodes whose outputs nothing uses, then unused weights and stale shape entries."""
    graph = proto.graph
    outputs = {o.name for o in graph.output}
    while True:
        used = set(_inputs(graph.node)) | outputs
        dead = [node for node in graph.node if not any(name in used for name in node.output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
    used = set(_inputs(graph.node))
    for init in [init for init in graph.initializer if init.name not in used]:
        graph.initializer.remove(init)
    produced = {name for node in graph.node for name in node.output}
    for info in [info for info in graph.value_info if info.name not in produced]:
        graph.value_info.remove(info)


def _inputs(nodes: Iterable[onnx.NodeProto]) -> Iterable[str]:
    return (name for node in nodes for name in node.input if name)
