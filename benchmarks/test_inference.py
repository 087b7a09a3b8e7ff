"""The exported classifier against Keras and the peers a user would pick instead.

Every contender gets the same validation images and the same thread count, and must agree with
Keras (`bench_runtimes.agreement`) before it is timed. Peers that are not installed (the optional
`[bench]` extra: ai-edge-litert, openvino) are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_models
import bench_runtimes
import numpy as np
import pytest
from bench_models import Settings
from bench_report import Results
from bench_runtimes import Agreement, Predict, Runtime

pytestmark = pytest.mark.benchmark(group="inference")

RUNTIMES = [
    *(f"onnx-{precision}" for precision in bench_models.PRECISIONS),
    "keras-predict_on_batch", "keras-tf.function",
    "litert-fp32", "litert-int8",
    "openvino-fp32", "openvino-int8",
]
BATCH_SIZES = (1, 32)
CHECK_BATCH = 32  # the batch size the validation set is checked at


@pytest.fixture(scope="session")
def contender(bench_run: Path, settings: Settings, keras_classifier: Any
              ) -> Callable[[str], Runtime]:
    """Build runtimes on first use (a peer's conversion takes seconds), each family at once."""
    built: dict[str, Runtime] = {}

    def get(name: str) -> Runtime:
        if name not in built:
            family = name.split("-")[0]
            if family == "onnx":
                precision = name.split("-")[1]
                found = [bench_runtimes.onnxruntime_runtime(
                    bench_models.onnx_file(bench_run, precision), precision, settings.threads)]
            elif family == "keras":
                found = bench_runtimes.keras_runtimes(keras_classifier, settings.image_size)
            elif family == "litert":
                pytest.importorskip("ai_edge_litert", reason="pip install 'edge-ssl[bench]'")
                found = bench_runtimes.litert_runtimes(
                    keras_classifier, settings.image_size, bench_models.calibration(bench_run),
                    settings.threads)
            else:
                pytest.importorskip("openvino", reason="pip install 'edge-ssl[bench]'")
                found = [bench_runtimes.openvino_runtime(
                    bench_models.onnx_file(bench_run, precision), precision,
                    settings.image_size, settings.threads) for precision in ("fp32", "int8")]
            built.update((runtime.name, runtime) for runtime in found)
        return built[name]

    return get


@pytest.fixture(scope="session")
def prepared() -> Callable[[Runtime, int], Predict]:
    cache: dict[tuple[str, int], Predict] = {}

    def get(runtime: Runtime, batch_size: int) -> Predict:
        key = (runtime.name, batch_size)
        if key not in cache:
            cache[key] = runtime.prepare(batch_size)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def reference(contender: Callable[[str], Runtime], validation_set: tuple[np.ndarray, np.ndarray]
              ) -> np.ndarray:
    """Keras' probabilities for the validation images: what every runtime must reproduce."""
    predict = contender("keras-predict_on_batch").prepare(CHECK_BATCH)
    return bench_runtimes.predict_all(predict, validation_set[0], CHECK_BATCH)


@pytest.fixture(scope="session")
def checked(prepared: Callable[[Runtime, int], Predict], reference: np.ndarray,
            validation_set: tuple[np.ndarray, np.ndarray], results: Results
            ) -> Callable[[Runtime], Agreement]:
    """Each runtime against Keras on the whole validation set, once; records its accuracy."""
    cache: dict[str, Agreement] = {}

    def get(runtime: Runtime) -> Agreement:
        if runtime.name not in cache:
            images, labels = validation_set
            probabilities = bench_runtimes.predict_all(prepared(runtime, CHECK_BATCH), images,
                                                       CHECK_BATCH)
            cache[runtime.name] = bench_runtimes.agreement(runtime.precision, reference,
                                                           probabilities, labels)
            results.accuracy[runtime.name] = cache[runtime.name].accuracy
        return cache[runtime.name]

    return get


@pytest.mark.parametrize("batch_size", BATCH_SIZES, ids=lambda b: f"b{b}")
@pytest.mark.parametrize("name", RUNTIMES)
def test_inference(name: str, batch_size: int, contender: Callable[[str], Runtime],
                   prepared: Callable[[Runtime, int], Predict],
                   checked: Callable[[Runtime], Agreement], reference: np.ndarray,
                   validation_set: tuple[np.ndarray, np.ndarray], settings: Settings,
                   benchmark: Any, measure: Callable[..., None]) -> None:
    runtime = contender(name)
    agreement = checked(runtime)
    assert not agreement.problems, f"{name} disagrees with Keras: {'; '.join(agreement.problems)}"
    predict = prepared(runtime, batch_size)
    images = bench_runtimes.first(validation_set[0], batch_size)
    timed_check = bench_runtimes.agreement(runtime.precision,
                                           bench_runtimes.first(reference, batch_size),
                                           predict(images),
                                           bench_runtimes.first(validation_set[1], batch_size))
    assert not timed_check.problems, f"{name} at batch {batch_size}: {timed_check.problems}"
    benchmark.extra_info.update(
        runtime=name, precision=runtime.precision, batch_size=batch_size,
        threads=settings.threads, top1_agreement_with_keras=agreement.top1_agreement,
        max_abs_diff_vs_keras=agreement.max_abs_diff, validation_accuracy=agreement.accuracy)
    measure(f"{name}-b{batch_size}", lambda: predict(images), items=batch_size)
