"""One inference contender in a process of its own, answering arena.py's protocol.

usage: python contender.py RUN NAME BATCH THREADS full|smoke

NAME is a runtime of bench_runtimes (`onnx-fp32`, `litert-int8`, `keras-tf.function`, ...).
Before anything is timed it checks its answers against Keras' on the run's whole validation set
(a fast wrong answer is not a result) and reports the agreement; on `prepare` it chooses the
layout that is fastest for BATCH, checks that layout's answers on the first BATCH images, and
warms up. A peer that is not installed answers with a skip.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import arena
import bench_models
import bench_runtimes


def command(run: Path, name: str, batch: int, threads: int, full: bool) -> list[str]:
    """How the suite starts this script for the contender `name` at `batch`."""
    return [sys.executable, __file__, str(run), name, str(batch), str(threads),
            "full" if full else "smoke"]


def main(run: Path, name: str, batch: int, threads: int, mode: str) -> None:
    images, labels = bench_models.validation(run)
    try:
        runtime = bench_runtimes.build(name, run, images.shape[1], threads)
    except bench_runtimes.Missing as missing:
        print(json.dumps({"skip": str(missing)}), flush=True)
        return
    reference = bench_models.reference(run)
    check = bench_models.CHECK_BATCH
    prepared = runtime.prepare(check, runtime.layouts(check)[0])
    try:
        agreement = bench_runtimes.agreement(
            runtime.precision, reference,
            bench_runtimes.predict_all(prepared.predict, images, check), labels)
    finally:
        prepared.close()

    batch_images = bench_runtimes.first(images, batch)
    timed: list[bench_runtimes.Prepared] = []

    def prepare(_: list[str]) -> tuple[Any, dict[str, Any]]:
        fastest = bench_runtimes.fastest(runtime, batch, batch_images,
                                         bench_runtimes.SEARCH_SECONDS if mode == "full" else 0)
        timed.append(fastest)
        problems = bench_runtimes.agreement(
            runtime.precision, bench_runtimes.first(reference, batch),
            fastest.predict(batch_images), bench_runtimes.first(labels, batch)).problems

        def call() -> object:
            return fastest.predict(batch_images)

        if mode == "full":
            arena.warm_up(call)
        return call, {"layout": fastest.layout.to_json(), "problems": list(problems)}

    try:
        arena.serve({**dataclasses.asdict(agreement), "precision": runtime.precision},
                    prepare)
    finally:
        for prepared in timed:
            prepared.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5])
