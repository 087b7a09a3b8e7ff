"""The exported classifier against Keras and the peers a user would pick instead.

Every contender gets the same validation images and the same cores, must agree with Keras
(`bench_runtimes.agreement`) before it is timed, and is timed in the layout (instances × threads,
the batch split among them) that measured fastest for it. One runtime is alive at a time: each
is built, checked, timed at every batch size and closed, its thread pools with it, before the
next is built, so that no idle pool of another runtime takes cores from the one being timed; the
last test times onnxruntime again in a process of its own and checks that the two agree. Peers
that are not installed (the optional `[bench]` extra: ai-edge-litert, openvino) are skipped.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bench_models
import bench_runtimes
import numpy as np
import pytest
from bench_models import Settings
from bench_report import Results
from bench_runtimes import Agreement, Runtime

pytestmark = pytest.mark.benchmark(group="inference")

# Keras last: TensorFlow's threads are the one pool that cannot be closed once it has run.
RUNTIMES = [
    *(f"onnx-{precision}" for precision in bench_models.PRECISIONS),
    "litert-fp32", "litert-int8",
    "openvino-fp32", "openvino-int8",
    "keras-predict_on_batch", "keras-tf.function",
]
BATCH_SIZES = (1, 32)
CHECK_BATCH = bench_models.CHECK_BATCH
ALONE = "onnx-fp32-b32"  # timed again in a process of its own
ALONE_AGREEMENT = (0.8, 1.25)  # in-suite median / alone median: within noise


@pytest.fixture(scope="session")
def contender(bench_run: Path, settings: Settings, request: pytest.FixtureRequest
              ) -> Iterator[Callable[[str], Runtime]]:
    """Build a runtime's family on first use; building another family drops the previous one,
    so that only one is alive at a time. The Keras model is loaded only for Keras' own family,
    the last: TensorFlow starts in this process then, and not before."""
    built: dict[str, Runtime] = {}

    def get(name: str) -> Runtime:
        if name not in built:
            built.clear()
            gc.collect()
            family = name.split("-")[0]
            if family == "onnx":
                found = [bench_runtimes.onnxruntime_runtime(
                    bench_models.onnx_file(bench_run, precision), precision, settings.threads)
                    for precision in bench_models.PRECISIONS]
            elif family == "keras":
                found = bench_runtimes.keras_runtimes(
                    request.getfixturevalue("keras_classifier"), settings.image_size,
                    settings.threads)
            elif family == "litert":
                pytest.importorskip("ai_edge_litert", reason="pip install 'edge-ssl[bench]'")
                found = bench_runtimes.litert_runtimes(bench_run, settings.image_size,
                                                       settings.threads)
            else:
                pytest.importorskip("openvino", reason="pip install 'edge-ssl[bench]'")
                found = [bench_runtimes.openvino_runtime(
                    bench_models.onnx_file(bench_run, precision), precision,
                    settings.image_size, settings.threads) for precision in ("fp32", "int8")]
            built.update((runtime.name, runtime) for runtime in found)
        return built[name]

    yield get
    built.clear()


@pytest.fixture(scope="session")
def reference(bench_run: Path) -> np.ndarray:
    """Keras' probabilities for the validation images, computed in keras_side.py's process:
    what every runtime must reproduce."""
    return bench_models.reference(bench_run)


@pytest.fixture(scope="session")
def checked(reference: np.ndarray, validation_set: tuple[np.ndarray, np.ndarray],
            results: Results) -> Callable[[Runtime], Agreement]:
    """Each runtime against Keras on the whole validation set, once; records its accuracy."""
    cache: dict[str, Agreement] = {}

    def get(runtime: Runtime) -> Agreement:
        if runtime.name not in cache:
            images, labels = validation_set
            prepared = runtime.prepare(CHECK_BATCH, runtime.layouts(CHECK_BATCH)[0])
            try:
                probabilities = bench_runtimes.predict_all(prepared.predict, images,
                                                           CHECK_BATCH)
            finally:
                prepared.close()
            cache[runtime.name] = bench_runtimes.agreement(runtime.precision, reference,
                                                           probabilities, labels)
            results.accuracy[runtime.name] = cache[runtime.name].accuracy
        return cache[runtime.name]

    return get


@pytest.mark.parametrize(("name", "batch_size"),
                         [(name, batch) for name in RUNTIMES for batch in BATCH_SIZES],
                         ids=[f"{name}-b{batch}" for name in RUNTIMES for batch in BATCH_SIZES])
def test_inference(name: str, batch_size: int, contender: Callable[[str], Runtime],
                   checked: Callable[[Runtime], Agreement], reference: np.ndarray,
                   validation_set: tuple[np.ndarray, np.ndarray], settings: Settings,
                   results: Results, benchmark: Any, measure: Callable[..., None]) -> None:
    runtime = contender(name)
    agreement = checked(runtime)
    assert not agreement.problems, f"{name} disagrees with Keras: {'; '.join(agreement.problems)}"
    images = bench_runtimes.first(validation_set[0], batch_size)
    prepared = bench_runtimes.fastest(runtime, batch_size, images)
    try:
        timed_check = bench_runtimes.agreement(
            runtime.precision, bench_runtimes.first(reference, batch_size),
            prepared.predict(images), bench_runtimes.first(validation_set[1], batch_size))
        assert not timed_check.problems, f"{name} at batch {batch_size}: {timed_check.problems}"
        benchmark.extra_info.update(
            runtime=name, precision=runtime.precision, batch_size=batch_size,
            layout=prepared.layout.to_json(), top1_agreement_with_keras=agreement.top1_agreement,
            max_abs_diff_vs_keras=agreement.max_abs_diff, validation_accuracy=agreement.accuracy)
        results.layouts[f"{name}-b{batch_size}"] = prepared.layout
        measure(f"{name}-b{batch_size}", lambda: prepared.predict(images), items=batch_size)
    finally:
        prepared.close()


def test_onnxruntime_alone_agrees_with_the_suite(bench_run: Path, settings: Settings,
                                                 results: Results, benchmark: Any) -> None:
    """onnxruntime at batch 32 in a fresh process that imports nothing else, in the layout the
    suite chose: the suite's number is trustworthy only if the two agree within noise."""
    layout = results.layouts.get(ALONE)
    if layout is None:
        pytest.skip(f"{ALONE} was not timed in this session")
    command = [sys.executable, str(Path(__file__).with_name("time_alone.py")),
               str(bench_models.onnx_file(bench_run, "fp32")), "32", str(layout.sessions),
               str(layout.threads), "1.0" if settings.full else "0.05"]
    timed: dict[str, float] = {}

    def run() -> None:
        done = subprocess.run(command, capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        timed.update(json.loads(done.stdout))

    if benchmark.disabled:
        benchmark(run)
    else:
        benchmark.pedantic(run, rounds=1, iterations=1)
    results.add(f"{ALONE}-alone", timed["median"], 32, best=timed["best"])
    in_suite = results.median(ALONE)
    if settings.full and in_suite is not None:
        ratio = in_suite / timed["median"]
        low, high = ALONE_AGREEMENT
        assert low <= ratio <= high, (
            f"{ALONE}: {in_suite * 1e3:.3f} ms in the suite, {timed['median'] * 1e3:.3f} ms "
            f"alone ({ratio:.2f}×): something else in the suite takes the cores")
