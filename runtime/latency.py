"""Latency of exported models under onnxruntime, side by side.

Every model sees the same random uint8 images at its native size (same seed), so FP32 and INT8
variants of one model are compared on identical inputs. Each batch size runs in the layout
(sessions × threads, edge_ssl.runtime.parallel) the user set or the calibration found fastest
for it, and the result says which. Warm-up runs come first: the first
calls allocate memory and pick kernels, and are not the steady state a device lives in.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import MISSING, dataclass
from pathlib import Path

import numpy as np

from edge_ssl import __version__
from edge_ssl.errors import ConfigError
from edge_ssl.options import RUNTIME, joined, option
from edge_ssl.runtime.cpu import CpuInfo, cpu_info
from edge_ssl.runtime.litert import has_twin
from edge_ssl.runtime.model import ModelInfo, SessionOptions, require_positive
from edge_ssl.runtime.parallel import (
    Layout,
    candidate_layouts,
    fastest,
    open_runner,
    usable_cores,
)

LITERT = "LiteRT"  # the provider column of --compare-litert's rows


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
    compare_litert: bool = option(
        False, "Also time each FP32 and INT8 classifier as LiteRT runs it: the Keras model it was "
        "exported from (RUN/classifier.keras) converted by TensorFlow's converter, in its "
        "fastest layout too (FP16 files and rotation models have no twin). Needs pip install "
        "'edge-ssl\\[train,bench]'.", panel=RUNTIME)
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
    """Time every model of `config` at every batch size (and its LiteRT twin, if asked).

    Raises:
        ModelError, DeviceError: a model cannot be used (see `open_session`).
        ConfigError: --compare-litert cannot find or convert a classifier's Keras model.
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
                info = runner.info
                times = _time(runner, _images(inputs, info.image_size, config, rng)[:batch_size],
                              config)
            results.append(_result(str(path), info, runner.provider, runner.layout,
                                   info.file_size, batch_size, times, config))
        if config.compare_litert and has_twin(info):
            results.extend(_litert_results(info, config, _images(inputs, info.image_size,
                                                                 config, rng)))
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


def _images(inputs: dict[int, np.ndarray], size: int, config: BenchConfig,
            rng: np.random.Generator) -> np.ndarray:
    """The random images of native size `size`, `[max batch, S, S, 3]`, drawn once per size."""
    if size not in inputs:
        inputs[size] = rng.integers(0, 256, (max(config.batch_sizes), size, size, 3),
                                    dtype=np.uint8)
    return inputs[size]


def _result(model: str, info: ModelInfo, provider: str, layout: Layout, file_size: int,
            batch_size: int, times: np.ndarray, config: BenchConfig) -> BenchResult:
    p50, p90, p99 = np.percentile(times, [50, 90, 99]) * 1e3
    return BenchResult(
        model=model, precision=info.precision, task=info.task, image_size=info.image_size,
        file_size=file_size, provider=provider, sessions=layout.sessions, threads=layout.threads,
        batch_size=batch_size, iterations=config.iterations, p50_ms=float(p50),
        p90_ms=float(p90), p99_ms=float(p99), mean_ms=float(times.mean() * 1e3),
        images_per_s=float(batch_size * config.iterations / times.sum()))


def _litert_results(info: ModelInfo, config: BenchConfig, images: np.ndarray
                    ) -> list[BenchResult]:
    """The model's LiteRT twin at every batch size, in the layouts onnxruntime may use (LiteRT
    has no default thread count of its own here: one interpreter gets every core)."""
    from edge_ssl.runtime.litert import convert_source, open_litert

    content = convert_source(info)
    cores = usable_cores()
    results = []
    for batch_size in config.batch_sizes:
        batch = images[:batch_size]
        first, *others = [Layout(layout.sessions, layout.threads or cores) for layout in
                          candidate_layouts(config.sessions, config.threads, batch_size, cores)]
        engine = fastest(open_litert(content, info.image_size, batch_size, first),
                         [functools.partial(open_litert, content, info.image_size, batch_size,
                                            layout) for layout in others], batch)
        try:
            times = _time(engine, batch, config)
        finally:
            engine.close()
        results.append(_result(f"{info.path} [LiteRT]", info, LITERT, engine.layout,
                               len(content), batch_size, times, config))
    return results
