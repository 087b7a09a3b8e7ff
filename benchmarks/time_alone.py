"""Time one exported model with onnxruntime in a process that imports nothing else.

usage: python time_alone.py MODEL BATCH SESSIONS THREADS SECONDS

The suite's inference benchmark runs this to check that its own numbers are not disturbed by the
other runtimes of the session (see test_inference.py). It warms up as the suite's `measure` does,
then times calls for SECONDS (5 at least) and prints {"median": s, "best": s} per call as JSON.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from edge_ssl.runtime.model import Device
from edge_ssl.runtime.parallel import Layout, open_layout

WARMUP_CALLS, WARMUP_SECONDS, MIN_ROUNDS = 10, 0.3, 5


def main(model: str, batch: str, sessions: str, threads: str, seconds: str) -> None:
    runner = open_layout(Path(model), Device.CPU,
                         Layout(int(sessions), None if threads == "None" else int(threads)))
    size = runner.info.image_size
    images = np.random.default_rng(0).integers(0, 256, (int(batch), size, size, 3), np.uint8)
    start, calls = time.perf_counter(), 0
    while calls < WARMUP_CALLS or time.perf_counter() - start < WARMUP_SECONDS:
        runner.run(images)
        calls += 1
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < MIN_ROUNDS or time.perf_counter() - start < float(seconds):
        begin = time.perf_counter()
        runner.run(images)
        times.append(time.perf_counter() - begin)
    runner.close()
    print(json.dumps({"median": float(np.median(times)), "best": min(times)}))


if __name__ == "__main__":
    main(*sys.argv[1:])
