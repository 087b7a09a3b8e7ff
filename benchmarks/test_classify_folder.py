"""`classify` end to end over a folder of JPEGs, and the CLI's start-up to its first result.

The classify benchmark times the library call a user's `edge-ssl classify DIR` makes (listing,
opening the sessions in the layout calibrated for this model, decoding in threads, inference):
the target is at 70 % or more of the model's own batch-32 throughput, i.e. decoding hidden behind
inference. The model's throughput is measured in turn with it, by the inference benchmark's
onnxruntime contender in a process of its own (arena.py), so both see the same machine. Its
first call, untimed, calibrates the layout, as a user's first job on a model does.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import arena
import bench_models
import pytest
from arena import Contender, Local
from bench_models import Settings
from bench_report import Results
from contender import command as contender_command

from edge_ssl.images import list_images
from edge_ssl.runtime.classify import ClassifyConfig, classify
from edge_ssl.runtime.model import Device
from edge_ssl.runtime.parallel import Layout

pytestmark = pytest.mark.benchmark(group="classify")


ROUNDS = 16  # a full run: 16 classify calls and 16 seconds of the model, in turn


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_classify_folder(precision: str, bench_run: Path, jpegs: Path, settings: Settings,
                         results: Results, record: Callable[..., None]) -> None:
    files = list_images(jpegs, recursive=True)
    # No --sessions or --threads: the layout classify picks by itself, as a user's call gets.
    config = ClassifyConfig((jpegs,), model=bench_models.onnx_file(bench_run, precision),
                            recursive=True, device=Device.CPU)

    def run() -> None:
        result = classify(config)
        assert result.classified == len(files) and not result.failures

    folder = Local(f"classify-{precision}", run)
    model = Contender(f"classify-{precision}-model-b32", contender_command(
        bench_run, f"onnx-{precision}", 32, settings.threads, settings.full))
    arena.run([model, folder], ROUNDS if settings.full else 1, 1.0 if settings.full else 0.0)
    assert not model.skip and not model.checked["problems"], model.checked
    record(folder.key, folder.times, len(files))
    # The model's own throughput goes to the targets only: pytest-benchmark's table holds one
    # benchmark per test, and this one is classify's.
    results.add_times(model.key, model.times, 32)
    results.layouts[model.key] = Layout(**model.ready["layout"])


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
