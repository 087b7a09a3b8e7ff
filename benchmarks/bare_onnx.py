"""One exported model on onnxruntime in a bare process, answering arena.py's protocol.

usage: python bare_onnx.py MODEL BATCH full|smoke

The control of the inference benchmark: the same file, batch and layout (given with `prepare`) as
the suite's own onnxruntime contender, in a process that imports nothing but edge-ssl's runtime,
timed in turn with the contenders. If the two disagree, the harness itself is in the numbers.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import arena
import numpy as np

from edge_ssl.runtime.model import Device
from edge_ssl.runtime.parallel import Layout, Runner, open_layout


def command(model: Path, batch: int, full: bool) -> list[str]:
    """How the suite starts this script for `model` at `batch`."""
    return [sys.executable, __file__, str(model), str(batch), "full" if full else "smoke"]


def main(model: str, batch: str, mode: str) -> None:
    runners: list[Runner] = []

    def prepare(layout: list[str]) -> tuple[Any, dict[str, Any]]:
        sessions, threads = (int(value) for value in layout)
        runner = open_layout(Path(model), Device.CPU, Layout(sessions, threads))
        runners.append(runner)
        size = runner.info.image_size
        images = np.random.default_rng(0).integers(0, 256, (int(batch), size, size, 3),
                                                   np.uint8)

        def call() -> object:
            return runner.run(images)

        if mode == "full":
            arena.warm_up(call)
        return call, {"layout": runner.layout.to_json(), "problems": []}

    try:
        arena.serve({}, prepare)
    finally:
        for runner in runners:
            runner.close()


if __name__ == "__main__":
    main(*sys.argv[1:])
