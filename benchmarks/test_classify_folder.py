"""`classify` end to end over a folder of JPEGs, and the CLI's start-up to its first result.

The classify benchmark times the library call a user's `edge-ssl classify DIR` makes (listing,
opening the sessions and choosing their layout, decoding in threads, inference): the target is
at 70 % or more of the model's own batch-32 throughput, i.e. decoding hidden behind inference.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import bench_models
import pytest
from bench_models import Settings

from edge_ssl.images import list_images
from edge_ssl.runtime.classify import ClassifyConfig, classify
from edge_ssl.runtime.model import Device

pytestmark = pytest.mark.benchmark(group="classify")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_classify_folder(precision: str, bench_run: Path, jpegs: Path, settings: Settings,
                         measure: Callable[..., None]) -> None:
    files = list_images(jpegs, recursive=True)
    # No --sessions or --threads: the layout classify picks by itself, as a user's call gets.
    config = ClassifyConfig((jpegs,), model=bench_models.onnx_file(bench_run, precision),
                            recursive=True, device=Device.CPU)

    def run() -> None:
        result = classify(config)
        assert result.classified == len(files) and not result.failures

    measure(f"classify-{precision}", run, items=len(files), warmup=1, rounds=settings.rounds)


def test_cli_startup(bench_run: Path, jpegs: Path, settings: Settings,
                     measure: Callable[..., None]) -> None:
    """Process start to the printed label of one image: what a shell script calling us waits."""
    image = list_images(jpegs, recursive=True)[0]
    command = [*bench_models.edge_ssl_command(), "classify", str(image), "--model",
               str(bench_models.onnx_file(bench_run, "fp32")), "--device", "cpu",
               "--threads", str(settings.threads)]

    wide = {**os.environ, "COLUMNS": "1000"}  # rich must not shorten the path it prints

    def run() -> None:
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=wide)
        assert done.returncode == 0 and image.name in done.stdout, done.stdout + done.stderr

    measure("cli-startup", run, items=1, warmup=1, rounds=settings.rounds)
