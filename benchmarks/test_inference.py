"""The exported classifier against Keras and the peers a user would pick instead.

Every contender gets the same validation images and the same cores, must agree with Keras on the
whole validation set (`bench_runtimes.agreement`) before it is timed, and is timed in the layout
(instances × threads, the batch split among them) that measured fastest for it. Each runs in a
process of its own (contender.py: only its own thread pools alive, and TensorFlow not in the
suite's process), and the contenders of a batch size are timed in turn, in short blocks, so that
each sees the same moments of a machine whose speed drifts (arena.py). A control runs the
onnxruntime contender's file and layout once more in a bare process, timed in turn with the
others: the two must agree, or the harness itself is in the numbers. Peers that are not
installed (the optional `[bench]` extra: ai-edge-litert, openvino) are skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import arena
import bench_models
import numpy as np
import pytest
from arena import Contender
from bare_onnx import command as bare_command
from bench_models import Settings
from bench_report import Results
from contender import command as contender_command

from edge_ssl.runtime.parallel import Layout

pytestmark = pytest.mark.benchmark(group="inference")

RUNTIMES = [
    *(f"onnx-{precision}" for precision in bench_models.PRECISIONS),
    "litert-fp32", "litert-int8",
    "openvino-fp32", "openvino-int8",
    "keras-predict_on_batch", "keras-tf.function",
]
BATCH_SIZES = (1, 32)
CONTROL, CONTROLLED = "onnx-fp32-bare", "onnx-fp32"  # the control, at batch 32
CONTROL_AGREEMENT = (0.9, 1.1)  # the contender's median / the control's: within noise
ROUNDS, BLOCK_SECONDS = 30, 0.1  # a full run: each contender's calls, in 30 blocks of 0.1 s


@pytest.fixture(scope="session")
def arenas(bench_run: Path, settings: Settings) -> Callable[[int], dict[str, Contender]]:
    """Every contender at a batch size, timed in turn (once per session and batch size)."""
    timed: dict[int, dict[str, Contender]] = {}
    failed: dict[int, Exception] = {}  # an arena that failed fails every test, once

    def get(batch: int) -> dict[str, Contender]:
        if batch in failed:
            raise failed[batch]
        if batch not in timed:
            contenders = [Contender(name, contender_command(bench_run, name, batch,
                                                            settings.threads, settings.full))
                          for name in RUNTIMES]
            if batch == 32:
                contenders.append(Contender(
                    CONTROL, bare_command(bench_models.onnx_file(bench_run, "fp32"), batch,
                                          settings.full),
                    same_layout_as=CONTROLLED))
            try:
                arena.run(contenders, ROUNDS if settings.full else 1,
                          BLOCK_SECONDS if settings.full else 0.0)
            except Exception as exc:
                failed[batch] = exc
                raise
            timed[batch] = {contender.key: contender for contender in contenders}
        return timed[batch]

    return get


@pytest.mark.parametrize(("name", "batch_size"),
                         [(name, batch) for name in RUNTIMES for batch in BATCH_SIZES],
                         ids=[f"{name}-b{batch}" for name in RUNTIMES for batch in BATCH_SIZES])
def test_inference(name: str, batch_size: int, arenas: Callable[[int], dict[str, Contender]],
                   results: Results, benchmark: Any, record: Callable[..., None]) -> None:
    contender = arenas(batch_size)[name]
    if contender.skip:
        pytest.skip(contender.skip)
    checked = contender.checked
    assert not checked["problems"], f"{name} disagrees with Keras: {'; '.join(checked['problems'])}"
    problems = contender.ready["problems"]
    assert not problems, f"{name} at batch {batch_size}: {'; '.join(problems)}"
    layout = Layout(**contender.ready["layout"])
    benchmark.extra_info.update(
        runtime=name, precision=checked["precision"], batch_size=batch_size,
        layout=layout.to_json(), top1_agreement_with_keras=checked["top1_agreement"],
        max_abs_diff_vs_keras=checked["max_abs_diff"], validation_accuracy=checked["accuracy"])
    results.accuracy[name] = checked["accuracy"]
    results.layouts[f"{name}-b{batch_size}"] = layout
    record(f"{name}-b{batch_size}", contender.times, batch_size)


def test_a_bare_process_agrees_with_the_contender(
        arenas: Callable[[int], dict[str, Contender]], settings: Settings, results: Results,
        record: Callable[..., None]) -> None:
    """The onnxruntime contender and the same file and layout in a bare process, timed in turn:
    the suite's number is trustworthy only if the two agree within noise."""
    timed = arenas(32)
    control, controlled = timed[CONTROL], timed[CONTROLLED]
    assert control.ready["layout"] == controlled.ready["layout"]
    record(f"{CONTROL}-b32", control.times, 32)
    results.layouts[f"{CONTROL}-b32"] = Layout(**control.ready["layout"])
    ratio = float(np.median(controlled.times) / np.median(control.times))
    low, high = CONTROL_AGREEMENT
    if settings.full:
        assert low <= ratio <= high, (
            f"{CONTROLLED} at batch 32: {ratio:.2f}× the same file in a bare process, timed in "
            "turn: the suite's harness, not the runtime, is in its numbers")
