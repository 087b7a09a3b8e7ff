"""Keras model → ONNX proto through one `tf.function` (design §8, style §7), plus its metadata."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import keras
import onnx
import tensorflow as tf
import tf2onnx

import edge_ssl
from edge_ssl import contract, images
from edge_ssl.errors import ExportError
from edge_ssl.train.model import Preprocess

# Names for the dynamic dimensions, so that tools such as Netron show what each one means.
INPUT_DIMS = ("batch", "height", "width", 3)
OUTPUT_BATCH = "batch"


def to_onnx(model: keras.Model, opset: int) -> onnx.ModelProto:
    """Convert `model` (uint8 `[N, H, W, 3]` → probabilities `[N, C]`) to an ONNX proto.

    The traced function calls the model with training=False, so BatchNorm uses its moving
    statistics; its only input is the uint8 image, so the graph starts with the model's Cast.

    Raises:
        ExportError: tf2onnx raised. Nodes it merely logs as failed are caught by verification.
    """
    signature = (tf.TensorSpec([None, None, None, 3], tf.uint8, name=contract.INPUT_NAME),)

    @tf.function(input_signature=signature)
    def serve(image: tf.Tensor) -> dict[str, tf.Tensor]:
        return {contract.OUTPUT_NAME: model(image, training=False)}

    try:
        proto, _ = tf2onnx.convert.from_function(serve, input_signature=signature, opset=opset)
    except Exception as exc:  # tf2onnx raises whatever its handlers raise
        raise ExportError(f"tf2onnx could not convert {model.name!r}: {exc}") from exc
    _name_dims(proto)
    return proto


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
    }


def set_metadata(proto: onnx.ModelProto, metadata: dict[str, Any]) -> None:
    """Make `metadata` the file's only `metadata_props`, each value as JSON.

    Tools' own entries (quant_pre_process adds a plain-string marker) are dropped, so that every
    value a reader finds is JSON.
    """
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, {key: json.dumps(value) for key, value in metadata.items()})

