"""Every way of running the classifier that the inference benchmarks compare, behind one shape.

A `Runtime` turns a batch size and a layout into a `Prepared` predict function, uint8
`[B, S, S, 3]` → probabilities `[B, C]`, specialised for that size the way a deployment would
(LiteRT and OpenVINO plan memory for a fixed shape). A layout is how the same cores are used:
one instance (session, interpreter, stream) with every thread, or several with fewer threads
each, the batch split among them on Python threads. Every runtime gets the same images and the
same cores, is checked against Keras on the validation images before it is timed (a fast wrong
answer is not a result), and is timed in the layout that measured fastest for it, so that every
ratio compares the best of each.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_ssl import contract
from edge_ssl.export.config import ExportConfig
from edge_ssl.runtime import parallel
from edge_ssl.runtime.parallel import Layout

Predict = Callable[[np.ndarray], np.ndarray]

# Largest |Δprobability| against Keras; INT8 is judged by top-1 and accuracy only. FP16 is held
# to the bound its export passed (`--fp16-tolerance`): smoke models measured 1.1e-2 and 2.05e-2,
# so anything tighter tests the seed of the smoke model rather than the runtime.
MAX_ABS_DIFF = {"fp32": 1e-4, "fp16": ExportConfig.fp16_tolerance}
# A top-1 that differs from Keras is a bug only where Keras' two best probabilities are further
# apart than this runtime's arithmetic can move them: each by at most MAX_ABS_DIFF.
TOP1_MARGIN = {"fp32": 2 * MAX_ABS_DIFF["fp32"], "fp16": 2 * MAX_ABS_DIFF["fp16"], "int8": 0.5}
SEARCH_SECONDS = 0.3  # each candidate layout is timed this long (after a warm-up call)


@dataclass
class Prepared:
    """A runtime ready for one batch size in one layout; `close` frees its threads and memory."""

    predict: Predict
    layout: Layout
    stop: Callable[[], None] = field(default=lambda: None)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return self.predict(images)

    def close(self) -> None:
        self.stop()


@dataclass(frozen=True)
class Runtime:
    """One contender: `prepare(batch_size, layout)`; `layouts(batch_size)` lists the layouts
    worth timing for that batch (the first is one instance with every thread)."""

    name: str
    precision: str
    prepare: Callable[[int, Layout], Prepared]
    layouts: Callable[[int], list[Layout]]


def split_layouts(threads: int) -> Callable[[int], list[Layout]]:
    """One instance with `threads` threads, then the splits of them that edge-ssl's own runtime
    tries (`parallel.core_splits`): every contender gets the same candidates."""
    return lambda batch_size: [Layout(1, threads), *parallel.core_splits(batch_size, threads)]


def one_layout(threads: int) -> Callable[[int], list[Layout]]:
    """For runtimes whose threads are set once per process (TensorFlow)."""
    return lambda _: [Layout(1, threads)]


def fastest(runtime: Runtime, batch_size: int, images: np.ndarray,
            seconds: float = SEARCH_SECONDS) -> Prepared:
    """`runtime` prepared in the layout with the most images per second on `images`, each
    candidate timed for `seconds`; the other layouts are closed. Blocks start after a pause
    for spinning threads to stop, whether or not this runtime's threads spin."""
    first, *others = runtime.layouts(batch_size)
    return parallel.fastest(runtime.prepare(batch_size, first),
                            [functools.partial(runtime.prepare, batch_size, layout)
                             for layout in others], images, seconds,
                            parallel.SPIN_SETTLE_SECONDS if seconds else 0.0)


class Missing(Exception):
    """A peer runtime that is not installed; the benchmarks skip it."""


def build(name: str, run: Path, image_size: int, threads: int) -> Runtime:
    """The runtime called `name` (`onnx-fp32`, `litert-int8`, `keras-tf.function`, ...) for
    the benchmark run `run`.

    Raises:
        Missing: its peer library is not installed (the `[bench]` extra).
    """
    from bench_models import onnx_file

    family, precision = name.split("-", 1)
    if family == "onnx":
        return onnxruntime_runtime(onnx_file(run, precision), precision, threads)
    if family == "keras":
        return _named(name, keras_runtimes(_keras_model(run, threads), image_size, threads))
    extra = "pip install 'edge-ssl[bench]'"
    if family == "litert":
        try:
            import ai_edge_litert  # noqa: F401
        except ImportError:
            raise Missing(f"LiteRT is not installed: {extra}") from None
        return _named(name, litert_runtimes(run, image_size, threads))
    try:
        import openvino  # noqa: F401
    except ImportError:
        raise Missing(f"OpenVINO is not installed: {extra}") from None
    return openvino_runtime(onnx_file(run, precision), precision, image_size, threads)


def _named(name: str, runtimes: list[Runtime]) -> Runtime:
    (found,) = [runtime for runtime in runtimes if runtime.name == name]
    return found


def _keras_model(run: Path, threads: int) -> Any:
    """The run's Keras classifier, TensorFlow given `threads` intra-op threads (and one
    inter-op, as onnxruntime's sequential executor) before it runs anything."""
    import tensorflow as tf

    from edge_ssl import contract
    from edge_ssl.train.model import load_model

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    return load_model(run / contract.CLASSIFIER_MODEL)


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
    """An exported file through edge-ssl's own runtime (`edge_ssl.runtime.parallel`): the same
    sessions, threads and batch split as `edge-ssl classify`."""
    from edge_ssl.runtime.model import Device
    from edge_ssl.runtime.parallel import open_layout

    def prepare(_: int, layout: Layout) -> Prepared:
        runner = open_layout(path, Device.CPU, layout)
        return Prepared(runner.run, layout, runner.close)

    return Runtime(f"onnx-{precision}", precision, prepare, split_layouts(threads))


def keras_runtimes(model: Any, image_size: int, threads: int) -> list[Runtime]:
    """`predict_on_batch` (what most Keras code calls) and a compiled `tf.function`."""
    import tensorflow as tf

    serve = tf.function(lambda images: model(images, training=False), input_signature=[
        tf.TensorSpec([None, image_size, image_size, 3], tf.uint8)])

    def on_batch(images: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict_on_batch(images))

    def graph(images: np.ndarray) -> np.ndarray:
        return serve(images).numpy()

    return [Runtime("keras-predict_on_batch", "fp32",
                    lambda _, layout: Prepared(on_batch, layout), one_layout(threads)),
            Runtime("keras-tf.function", "fp32",
                    lambda _, layout: Prepared(graph, layout), one_layout(threads))]


def litert_runtimes(run: Path, image_size: int, threads: int) -> list[Runtime]:
    """The run's classifier converted by TensorFlow's own converter (`edge_ssl.export.litert`,
    in keras_side.py's process): FP32, and full INT8 calibrated on the images the ONNX INT8
    export calibrated on. A layout of N instances is N interpreters, each sized for its share
    of the batch."""
    from bench_models import litert_file

    from edge_ssl.runtime.litert import open_litert

    contents = {precision: litert_file(run, precision).read_bytes()
                for precision in ("fp32", "int8")}

    def runtime(precision: str) -> Runtime:
        def prepare(batch_size: int, layout: Layout) -> Prepared:
            split = open_litert(contents[precision], image_size, batch_size, layout)
            return Prepared(split, layout, split.close)

        return Runtime(f"litert-{precision}", precision, prepare, split_layouts(threads))

    return [runtime("fp32"), runtime("int8")]


def openvino_runtime(path: Path, precision: str, image_size: int, threads: int) -> Runtime:
    """An exported ONNX file compiled by OpenVINO for a static batch, in true FP32.

    Without INFERENCE_PRECISION_HINT f32, OpenVINO silently computes in bf16 on CPUs that have
    it. A layout of N instances is OpenVINO's own: N streams of the compiled model sharing the
    threads, each given its share of the batch by an asynchronous request.
    """
    import openvino

    core = openvino.Core()

    def prepare(batch_size: int, layout: Layout) -> Prepared:
        model = core.read_model(path)
        model.reshape({contract.INPUT_NAME: [batch_size // layout.sessions, image_size,
                                             image_size, 3]})
        options: dict[str, Any] = {
            "INFERENCE_PRECISION_HINT": "f32", "NUM_STREAMS": layout.sessions,
            "INFERENCE_NUM_THREADS": layout.sessions * (layout.threads or 1)}
        if layout.sessions == 1:
            options["PERFORMANCE_HINT"] = "LATENCY"
        compiled = core.compile_model(model, "CPU", options)
        requests = [compiled.create_infer_request() for _ in range(layout.sessions)]

        def predict(images: np.ndarray) -> np.ndarray:
            shares = np.split(images, layout.sessions)
            for request, share in zip(requests, shares, strict=True):
                request.start_async({contract.INPUT_NAME: share})
            for request in requests:
                request.wait()
            return np.concatenate([np.array(request.get_output_tensor(0).data)
                                   for request in requests])

        return Prepared(predict, layout, requests.clear)

    def layouts(batch_size: int) -> list[Layout]:
        # Streams take equal shares: a split the batch does not divide is left out.
        return [layout for layout in split_layouts(threads)(batch_size)
                if batch_size % layout.sessions == 0]

    return Runtime(f"openvino-{precision}", precision, prepare, layouts)
