"""A classifier converted by TensorFlow's own converter to LiteRT (TensorFlow Lite): the peer a
user would pick instead of ONNX, for `edge-ssl bench --compare-litert` and the benchmarks.

LiteRT has no builtin for the antialiased resize of the model's preprocessing
(`tf.ScaleAndTranslate`), so the converted graph casts and rescales without it: at S×S that resize
is an exact identity, and the ONNX graph, which keeps its Resize, is the one that pays for it.
Its input stays uint8 and its output float32 probabilities, as in the ONNX file, so both take
the same feed.
"""

from __future__ import annotations

import tempfile
import warnings
from typing import Any

import numpy as np

from edge_ssl import contract


def to_litert(model: Any, image_size: int, calibration: np.ndarray | None = None) -> bytes:
    """The `.tflite` content of a Keras classifier: FP32, or full INT8 when `calibration`
    (uint8 `[N, S, S, 3]` training images, those the ONNX INT8 export calibrated on) is given."""
    import keras
    import tensorflow as tf

    preprocess = model.get_layer("preprocess")
    features = inputs = keras.Input((image_size, image_size, 3))
    for layer in model.layers[model.layers.index(preprocess) + 1:]:  # a chain: backbone, pool, head
        features = layer(features)
    core = keras.Model(inputs, features)

    def serve(images: Any) -> Any:
        pixels = tf.cast(images, tf.float32) * preprocess.scale + preprocess.offset
        return core(pixels, training=False)

    with tempfile.TemporaryDirectory(prefix="edge-ssl-litert-") as tmp:
        archive = keras.export.ExportArchive()
        archive.track(core)
        archive.add_endpoint("serve", serve,
                             input_signature=[tf.TensorSpec([None, image_size, image_size, 3],
                                                            tf.uint8, name=contract.INPUT_NAME)])
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serve"])
        if calibration is not None:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            converter.representative_dataset = lambda: (
                {contract.INPUT_NAME: image[None]} for image in calibration)
        with warnings.catch_warnings():
            # The converter calibrates with the tf.lite.Interpreter it deprecates itself.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            return bytes(converter.convert())
