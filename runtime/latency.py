"""Latency of exported models under onnxruntime, side by side.

Every model sees the same random uint8 images at its native size (same seed), so FP32 and INT8
variants of one model are compared on identical inputs. Each batch size runs in the layout
(sessions × threads, edge_ssl.runtime.parallel) the user set or the calibration found fastest
for it, and the result says which. Warm-up runs come first: the first
calls allocate memory and pick kernels, and are not the steady state a device lives in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from pathlib import Path

import numpy as np

from edge_ssl import __version__
from edge_ssl.errors import ConfigError
from edge_ssl.options import RUNTIME, joined, option
from edge_ssl.runtime.cpu import CpuInfo, cpu_info
from edge_ssl.runtime.model import SessionOptions, require_positive
from edge_ssl.runtime.parallel import open_runner


def parse_batch_sizes(text: str) -> tuple[int, ...]:
    """`"1,8,32"` → `(1, 8, 32)`."""
    try:
        sizes = tuple(int(size) for size in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"{text!r} is not a comma-separated list of positive integers such "
                          "as 1,8,32.")
    return sizes


@dataclass(frozen=True)
class BenchConfig(SessionOptions):
    """Which models, batch sizes and how long to time them."""

    models: tuple[Path, ...] = option(
        MISSING, "ONNX models written by `edge-ssl export`, e.g. an FP32 and an INT8 variant.",
        "MODEL...", argument=True)
    batch_sizes: tuple[int, ...] = option(
        (1, 8, 32), "Comma-separated batch sizes to time.", "N,N", RUNTIME,
        parse=parse_batch_sizes, text=joined)
    warmup: int = option(10, "Untimed runs per batch size.", "N", RUNTIME, minimum=0)
    iterations: int = option(100, "Timed runs per batch size.", "N", RUNTIME, minimum=1)
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.models:
            raise ConfigError("models is empty; give at least one .onnx file")
        if not self.batch_sizes or min(self.batch_sizes) < 1:
            raise ConfigError(f"batch_sizes is {self.batch_sizes}; give sizes of 1 or more")
        if self.warmup < 0:
            raise ConfigError(f"warmup is {self.warmup}; it must be 0 or more")
        require_positive(self, "iterations")


@dataclass(frozen=True)
class BenchResult:
    """One model at one batch size. images_per_s counts images over the whole timed loop."""

    model: str
    precision: str | None
    task: str
    image_size: int
    file_size: int
    provider: str
    sessions: int  # the layout that ran: sessions sharing each batch,
    threads: int | None  # intra-op threads each (None: onnxruntime's default)
    batch_size: int
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    images_per_s: float


@dataclass(frozen=True)
class BenchReport:
    """All results of one run and the machine they were measured on."""

    results: tuple[BenchResult, ...]
    cpu: CpuInfo
    onnxruntime: str
    edge_ssl: str
    warmup: int


def bench(config: BenchConfig) -> BenchReport:
    """Time every model of `config` at every batch size.

    Raises:
        ModelError, DeviceError: a model cannot be used (see `open_session`).
    """
    import onnxruntime as ort

    rng = np.random.default_rng(config.seed)
    inputs: dict[int, np.ndarray] = {}  # native size → uint8 [max batch, S, S, 3]
    results = []
    for path in config.models:
        for batch_size in config.batch_sizes:
            # Each batch size gets its own layout: one session for one image, several for many.
            with open_runner(path, config.device, config.sessions, config.threads,
                             batch_size) as runner:
                size = runner.info.image_size
                if size not in inputs:
                    inputs[size] = rng.integers(0, 256, (max(config.batch_sizes), size, size, 3),
                                                dtype=np.uint8)
                times = _time(runner.run, inputs[size][:batch_size], config)
            p50, p90, p99 = np.percentile(times, [50, 90, 99]) * 1e3
            results.append(BenchResult(
                model=str(path), precision=runner.info.precision, task=runner.info.task,
                image_size=size, file_size=runner.info.file_size, provider=runner.provider,
                sessions=runner.layout.sessions, threads=runner.layout.threads,
                batch_size=batch_size, iterations=config.iterations, p50_ms=float(p50),
                p90_ms=float(p90), p99_ms=float(p99), mean_ms=float(times.mean() * 1e3),
                images_per_s=float(batch_size * config.iterations / times.sum()),
            ))
    return BenchReport(tuple(results), cpu_info(), ort.__version__, __version__, config.warmup)


def _time(run: Callable[[np.ndarray], np.ndarray], images: np.ndarray,
          config: BenchConfig) -> np.ndarray:
    """Seconds of each of `config.iterations` runs on `images`, after the warm-up runs."""
    for _ in range(config.warmup):
        run(images)
    times = np.empty(config.iterations)
    for i in range(config.iterations):
        start = time.perf_counter()
        run(images)
        times[i] = time.perf_counter() - start
    return times
