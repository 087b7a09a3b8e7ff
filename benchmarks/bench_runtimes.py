"""Every way of running the classifier that the inference benchmarks compare, behind one shape.

A `Runtime` turns a batch size into a `predict` function, uint8 `[B, S, S, 3]` → probabilities
`[B, C]`, specialised for that size the way a deployment would (LiteRT and OpenVINO plan memory
for a fixed shape). Every runtime gets the same images and the same number of threads, and is
checked against Keras on the validation images before it is timed: a fast wrong answer is not a
result.
"""

from __future__ import annotations

import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_ssl import contract
from edge_ssl.export.config import ExportConfig

Predict = Callable[[np.ndarray], np.ndarray]

# Largest |Δprobability| against Keras; INT8 is judged by top-1 and accuracy only. FP16 is held
# to the bound its export passed (`--fp16-tolerance`): smoke models measured 1.1e-2 and 2.05e-2,
# so anything tighter tests the seed of the smoke model rather than the runtime.
MAX_ABS_DIFF = {"fp32": 1e-4, "fp16": ExportConfig.fp16_tolerance}
# A top-1 that differs from Keras is a bug only where Keras' two best probabilities are further
# apart than this runtime's arithmetic can move them: each by at most MAX_ABS_DIFF.
TOP1_MARGIN = {"fp32": 2 * MAX_ABS_DIFF["fp32"], "fp16": 2 * MAX_ABS_DIFF["fp16"], "int8": 0.5}


@dataclass(frozen=True)
class Runtime:
    """One contender: `prepare(batch_size)` returns its predict function for that batch size."""

    name: str
    precision: str
    prepare: Callable[[int], Predict]


@dataclass(frozen=True)
class Agreement:
    """A runtime against Keras on the same validation images."""

    top1_agreement: float  # fraction of images with Keras' top-1
    max_abs_diff: float
    accuracy: float  # top-1 accuracy in percent
    problems: tuple[str, ...]


def first(array: np.ndarray, count: int) -> np.ndarray:
    """The first `count` rows, repeated from the start when there are fewer (the smoke model's
    validation set is smaller than a batch)."""
    return np.resize(array, (count, *array.shape[1:]))


def predict_all(predict: Predict, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Run every image through a fixed-batch `predict`, padding the last batch by repetition."""
    outputs = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        outputs.append(predict(first(batch, batch_size))[:len(batch)])
    return np.concatenate(outputs)


def agreement(precision: str, reference: np.ndarray, probabilities: np.ndarray,
              labels: np.ndarray) -> Agreement:
    """Compare `probabilities` with Keras' `reference` (both `[N, C]`) by the rules above."""
    top2 = np.sort(reference, axis=1)[:, -2:]
    confident = top2[:, 1] - top2[:, 0] > TOP1_MARGIN[precision]
    differ = reference.argmax(axis=1) != probabilities.argmax(axis=1)
    max_diff = float(np.max(np.abs(probabilities - reference)))
    problems = []
    if np.any(differ & confident):
        problems.append(f"top-1 differs from Keras on {int(np.sum(differ & confident))} of "
                        f"{int(np.sum(confident))} images where Keras' margin exceeds "
                        f"{TOP1_MARGIN[precision]}")
    limit = MAX_ABS_DIFF.get(precision)
    if limit is not None and max_diff > limit:
        problems.append(f"max |Δp| {max_diff:.2e} > {limit:.0e}")
    return Agreement(float(np.mean(~differ)), max_diff,
                     float(np.mean(probabilities.argmax(axis=1) == labels) * 100.0),
                     tuple(problems))


def onnxruntime_runtime(path: Path, precision: str, threads: int) -> Runtime:
    """An exported file through edge-ssl's own session settings (`edge_ssl.runtime.model`)."""
    from edge_ssl.runtime.model import Device, open_session

    session, _, _ = open_session(path, Device.CPU, threads)

    def predict(images: np.ndarray) -> np.ndarray:
        return session.run([contract.OUTPUT_NAME], {contract.INPUT_NAME: images})[0]

    return Runtime(f"onnx-{precision}", precision, lambda _: predict)


def keras_runtimes(model: Any, image_size: int) -> list[Runtime]:
    """`predict_on_batch` (what most Keras code calls) and a compiled `tf.function`."""
    import tensorflow as tf

    serve = tf.function(lambda images: model(images, training=False), input_signature=[
        tf.TensorSpec([None, image_size, image_size, 3], tf.uint8)])

    def on_batch(images: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(images))

    def graph(images: np.ndarray) -> np.ndarray:
        return serve(images).numpy()

    return [Runtime("keras-predict_on_batch", "fp32", lambda _: on_batch),
            Runtime("keras-tf.function", "fp32", lambda _: graph)]


def litert_runtimes(model: Any, image_size: int, calibration: np.ndarray,
                    threads: int) -> list[Runtime]:
    """The Keras model converted by TensorFlow's own converter: FP32, and full INT8.

    Full INT8 is calibrated on the images the ONNX INT8 export calibrated on; its input stays
    uint8 and its output float32 probabilities, as in the ONNX file, so both take the same feed.
    LiteRT has no builtin for the antialiased resize of the model's preprocessing
    (`tf.ScaleAndTranslate`), so its graph casts and rescales without it: at S×S that resize is
    an exact identity, and the ONNX graph, which keeps its Resize, is the one that pays for it.
    """
    import keras
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

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
        fp32 = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serve"]).convert()
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serve"])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.representative_dataset = lambda: (
            {contract.INPUT_NAME: image[None]} for image in calibration)
        with warnings.catch_warnings():
            # The converter calibrates with the tf.lite.Interpreter it deprecates itself.
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated")
            int8 = converter.convert()

    def prepare(content: bytes, batch_size: int) -> Predict:
        interpreter = Interpreter(model_content=content, num_threads=threads)
        (feed,), (fetch,) = interpreter.get_input_details(), interpreter.get_output_details()
        interpreter.resize_tensor_input(feed["index"], [batch_size, image_size, image_size, 3])
        interpreter.allocate_tensors()

        def predict(images: np.ndarray) -> np.ndarray:
            interpreter.set_tensor(feed["index"], images)
            interpreter.invoke()
            return interpreter.get_tensor(fetch["index"])

        return predict

    return [Runtime("litert-fp32", "fp32", lambda batch: prepare(fp32, batch)),
            Runtime("litert-int8", "int8", lambda batch: prepare(int8, batch))]


def openvino_runtime(path: Path, precision: str, image_size: int, threads: int) -> Runtime:
    """An exported ONNX file compiled by OpenVINO for a static batch, in true FP32.

    Without INFERENCE_PRECISION_HINT f32, OpenVINO silently computes in bf16 on CPUs that have
    it; one stream with the latency hint is how the other runtimes run too.
    """
    import openvino

    core = openvino.Core()
    options = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads,
               "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1}

    def prepare(batch_size: int) -> Predict:
        model = core.read_model(path)
        model.reshape({contract.INPUT_NAME: [batch_size, image_size, image_size, 3]})
        request = core.compile_model(model, "CPU", options).create_infer_request()

        def predict(images: np.ndarray) -> np.ndarray:
            return np.array(request.infer({contract.INPUT_NAME: images})[0])

        return predict

    return Runtime(f"openvino-{precision}", precision, prepare)
