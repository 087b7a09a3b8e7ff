"""Edits of a converted ONNX graph that remove run-time work the export can do once.

Both edits are exact (or exact up to float rounding) and every file they produce goes through the
same checks as any other: the parity check against Keras proves them on each export.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import numpy_helper

from edge_ssl import contract
from edge_ssl.errors import ExportError


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
