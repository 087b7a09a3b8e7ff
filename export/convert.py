"""Keras model → ONNX proto through one `tf.function`, plus its metadata."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import keras
import numpy as np
import onnx
import tensorflow as tf
import tf2onnx

import edge_ssl
from edge_ssl import contract, images
from edge_ssl.errors import ExportError
from edge_ssl.export.config import SUPPORTED_OPSETS
from edge_ssl.train.model import Preprocess

# Names for the dynamic dimensions, so that tools such as Netron show what each one means.
INPUT_DIMS = ("batch", "height", "width", 3)
OUTPUT_BATCH = "batch"


def to_onnx(model: keras.Model, opset: int) -> onnx.ModelProto:
    """Convert `model` (uint8 `[N, H, W, 3]` → probabilities `[N, C]`) to an ONNX proto.

    The traced function calls the model with training=False, so BatchNorm uses its moving
    statistics; its only input is the uint8 image, so the graph starts with the model's Cast.

    Raises:
        ExportError: tf2onnx raised, or `opset` has no antialiased Resize (before 18). Nodes
            tf2onnx merely logs as failed are caught by verification.
    """
    if opset not in SUPPORTED_OPSETS:
        raise ExportError(f"opset {opset}: use opset {SUPPORTED_OPSETS.start}, the first with "
                          "the antialiased Resize the preprocessing needs.")
    signature = (tf.TensorSpec([None, None, None, 3], tf.uint8, name=contract.INPUT_NAME),)

    @tf.function(input_signature=signature)
    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {contract.OUTPUT_NAME: model(image, training=False)}

    try:
        proto, _ = tf2onnx.convert.from_function(
            serve, input_signature=signature, opset=opset,
            custom_op_handlers={"ScaleAndTranslate": (_antialiased_resize, [])})
    except Exception as exc:  # tf2onnx raises whatever its handlers raise
        raise ExportError(f"tf2onnx could not convert {model.name!r}: {exc}") from exc
    _name_dims(proto)
    return proto


def _antialiased_resize(ctx: Any, node: Any, name: str, args: list[Any]) -> None:
    """tf2onnx handler: TF's antialiased bilinear resize → ONNX Resize with antialias=1.

    tf.image.resize(antialias=True) (the Preprocess layer's resize) becomes TF's
    ScaleAndTranslate op, which tf2onnx has no handler for. With a zero translation and the
    scale size / input size that tf.image.resize passes, it is the triangle filter widened by the
    downscale factor, taps outside the image dropped and the weights renormalised: ONNX Resize
    `linear` with `half_pixel` centres, `antialias=1` and `exclude_outside=1`, as Pillow's BILINEAR
    does. The export's parity check against Keras proves the equivalence on every export.
    """
    from tf2onnx import utils

    kernel = node.get_attr_value("kernel_type")
    kernel = kernel.decode() if isinstance(kernel, bytes) else kernel
    translation = node.inputs[3]
    utils.make_sure(kernel == "triangle" and node.get_attr_value("antialias"),
                    "only the antialiased bilinear resize is supported, not %s", kernel)
    utils.make_sure(translation.is_const() and not np.any(translation.get_tensor_value()),
                    "ScaleAndTranslate %s translates the image; only plain resizes convert", name)
    # NHWC → NCHW; sizes = [N, C] of the input followed by the requested [height, width].
    nchw = ctx.make_node("Transpose", [node.input[0]], {"perm": [0, 3, 1, 2]})
    shape = ctx.make_node("Shape", [nchw.output[0]])
    first, third = (ctx.make_const(utils.make_name(n), np.array([v], np.int64))
                    for n, v in (("start", 0), ("end", 2)))
    batch_channels = ctx.make_node("Slice", [shape.output[0], first.output[0], third.output[0]])
    size = ctx.make_node("Cast", [node.input[1]], {"to": onnx.TensorProto.INT64})
    sizes = ctx.make_node("Concat", [batch_channels.output[0], size.output[0]], {"axis": 0})
    empty = ctx.make_const(utils.make_name("empty"), np.array([], np.float32))
    resize = ctx.make_node(
        "Resize", [nchw.output[0], empty.output[0], empty.output[0], sizes.output[0]],
        {"mode": "linear", "coordinate_transformation_mode": "half_pixel", "antialias": 1,
         "exclude_outside": 1})
    shapes, dtypes = node.output_shapes, node.output_dtypes
    ctx.remove_node(node.name)
    ctx.make_node("Transpose", resize.output, {"perm": [0, 2, 3, 1]}, name=node.name,
                  outputs=node.output, shapes=shapes, dtypes=dtypes)


def _name_dims(proto: onnx.ModelProto) -> None:
    # tf2onnx calls the dynamic dimensions unk__N; the names are documentation only.
    for graph_input in proto.graph.input:
        for dim, name in zip(graph_input.type.tensor_type.shape.dim, INPUT_DIMS, strict=False):
            if isinstance(name, str) and not dim.HasField("dim_value"):
                dim.dim_param = name
    for output in proto.graph.output:
        dims = output.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_param = OUTPUT_BATCH


def metadata(task: str, labels: Sequence[str], preprocess: Preprocess, run: str,
             exported_at: str, precision: str) -> dict[str, Any]:
    """Everything the runtime needs to feed and read the model, with no other file."""
    return {
        contract.META_TASK: task,
        contract.META_LABELS: list(labels),
        contract.META_IMAGE_SIZE: preprocess.image_size,
        contract.META_RESCALE: {"scale": preprocess.scale, "offset": preprocess.offset},
        contract.META_INTERPOLATION: images.INTERPOLATION,
        contract.META_VERSION: edge_ssl.__version__,
        contract.META_RUN: run,
        contract.META_EXPORTED_AT: exported_at,
        contract.META_PRECISION: precision,
        contract.META_INPUT: contract.INPUT_ANY,  # export/twins.py writes the fixed files
    }


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, Any]) -> None:
    """Make `metadata` the file's only `metadata_props`, each value as JSON.

    Tools' own entries (quant_pre_process adds a plain-string marker) are dropped, so that every
    value a reader finds is JSON.
    """
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in metadata.items()})

