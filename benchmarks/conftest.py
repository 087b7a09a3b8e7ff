"""The benchmark session: full with `pytest --benchmark-only`, a one-call smoke test otherwise.

Plain `pytest` collects this folder too; it then disables pytest-benchmark's timing (each
benchmark body runs once) and builds a tiny model, so that CI proves every benchmark still works
in a minute or two. `--benchmark-only` (or `--benchmark-enable`) trains the benchmark model and
times everything; the target ratios are printed after pytest-benchmark's table and added to
`--benchmark-json` output together with the CPU's instruction-set features.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import arena
import bench_models
import bench_report
import numpy as np
import pytest
from bench_models import Settings
from bench_report import Results

# TensorFlow reads these when it is first imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

SETTINGS = pytest.StashKey[Settings]()
RESULTS = pytest.StashKey[Results]()


def pytest_configure(config: pytest.Config) -> None:
    # Every session calibrates afresh and saves the optimized graphs afresh, as a user's first
    # job on a model does, and leaves the user's own cache alone (the benchmark model outlives
    # the session).
    from edge_ssl.runtime.user_cache import CACHE_ENV

    folder = tempfile.mkdtemp(prefix="edge-ssl-bench-cache-")
    os.environ[CACHE_ENV] = folder
    config.add_cleanup(lambda: shutil.rmtree(folder, ignore_errors=True))
    # pytest-benchmark reads these options in its own pytest_configure, which runs last.
    full = bool(config.getoption("benchmark_only") or config.getoption("benchmark_enable"))
    if full and getattr(config.option, "numprocesses", None):
        raise pytest.UsageError("the benchmarks time one runtime at a time on every core; run "
                                "`pytest --benchmark-only` without -n")
    if not full:
        config.option.benchmark_disable = True
    config.stash[SETTINGS] = bench_models.settings(full)
    config.stash[RESULTS] = Results()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # The tests that `record` leave their `benchmark` unused, and pytest-benchmark says so.
    for item in items:
        if "record" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.filterwarnings("ignore:Benchmark fixture was not used"))


@pytest.fixture(scope="session")
def settings(pytestconfig: pytest.Config) -> Settings:
    return pytestconfig.stash[SETTINGS]


@pytest.fixture(scope="session")
def results(pytestconfig: pytest.Config) -> Results:
    return pytestconfig.stash[RESULTS]


@pytest.fixture(scope="session")
def tensorflow_threads(settings: Settings) -> None:
    """Give TensorFlow the thread count every other runtime gets (before it runs any op).

    inter-op 1 matches onnxruntime's sequential executor; a plain `pytest` session may already
    have started TensorFlow in the tests, and a smoke run does not time anything anyway.
    """
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(settings.threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:
        if settings.full:
            raise


@pytest.fixture(scope="session")
def bench_run(settings: Settings, pytestconfig: pytest.Config) -> Path:
    """The trained and exported run every benchmark uses (cached between sessions), built in
    processes of their own (see bench_models)."""
    return bench_models.cached_run(settings, pytestconfig.rootpath)


@pytest.fixture(scope="session")
def jpegs(settings: Settings, pytestconfig: pytest.Config) -> Path:
    return bench_models.jpeg_folder(settings, pytestconfig.rootpath)


@pytest.fixture(scope="session")
def validation_set(bench_run: Path) -> tuple[np.ndarray, np.ndarray]:
    """The run's held-out images and labels, the same for every runtime."""
    return bench_models.validation(bench_run)


@pytest.fixture
def measure(benchmark: Any, results: Results) -> Callable[..., None]:
    """Time `fn` in its steady state and record its median under `name`.

    Args (of the returned function):
        name: the key the target ratios look up.
        fn: one call of the work being measured.
        items: images or samples one call handles (for throughput).
        warmup: calls made before timing, at least arena.WARMUP_SECONDS' worth.
        rounds: fixed timed rounds for calls that take seconds; None lets pytest-benchmark
            calibrate (its --benchmark-min-rounds / --benchmark-max-time apply).
    """
    def run(name: str, fn: Callable[[], object], items: int, warmup: int = 10,
            rounds: int | None = None) -> None:
        benchmark.extra_info["items_per_call"] = items
        if benchmark.disabled:
            benchmark(fn)  # runs once: the smoke test
            return
        arena.warm_up(fn, warmup, arena.WARMUP_SECONDS if warmup else 0.0)
        if rounds is None:
            benchmark(fn)
        else:
            benchmark.pedantic(fn, rounds=rounds, iterations=1)
        stats = benchmark.stats.stats
        benchmark.extra_info["items_per_second"] = items / stats.median
        results.add(name, stats.median, items, best=stats.min)

    return run


@pytest.fixture
def record(benchmark: Any, results: Results) -> Callable[..., None]:
    """Record calls timed in another process (arena.py) under `name`, as `measure` records its own.

    pytest-benchmark has no public way to take times it did not measure itself, so these go to
    edge-ssl's own table and `--benchmark-json`'s `edge_ssl` section only, not to
    pytest-benchmark's table. A test using this requests `benchmark` all the same (so that
    `--benchmark-only` runs it), and its "not used" warning is ignored
    (`pytest_collection_modifyitems`).

    Args (of the returned function):
        name: the key the target ratios look up.
        times: seconds per call.
        items: images one call handles.
    """
    def run(name: str, times: list[float], items: int) -> None:
        benchmark.extra_info["items_per_call"] = items
        if benchmark.disabled:
            benchmark(lambda: None)  # the smoke test: the calls were made, nothing is timed
        benchmark.extra_info["items_per_second"] = items / results.add_times(name, times, items)

    return run


def environment(settings: Settings) -> dict[str, Any]:
    """The machine and library versions the numbers belong to."""
    from edge_ssl.runtime.cpu import cpu_info

    versions = {}
    for package in ("edge-ssl", "onnxruntime", "onnxruntime-gpu", "tensorflow", "keras",
                    "tf2onnx", "ai-edge-litert", "openvino", "numpy", "pillow"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return {"mode": "full" if settings.full else "smoke", "threads": settings.threads,
            "settings": dataclasses.asdict(settings), "cpu": dataclasses.asdict(cpu_info()),
            "python": platform.python_version(), "versions": versions}


def _has_vnni() -> bool:
    from edge_ssl.runtime.cpu import cpu_info

    return any("VNNI" in feature for feature in cpu_info().features)


def pytest_benchmark_update_machine_info(config: pytest.Config,
                                         machine_info: dict[str, Any]) -> None:
    machine_info["edge_ssl"] = environment(config.stash[SETTINGS])


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: list[Any],
                                 output_json: dict[str, Any]) -> None:
    results = config.stash[RESULTS]
    output_json["edge_ssl"] = {
        **environment(config.stash[SETTINGS]),
        **bench_report.to_json(results, bench_report.targets(results, _has_vnni())),
    }


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, exitstatus: int,
                            config: pytest.Config) -> None:
    """Print the target ratios after pytest-benchmark's tables."""
    results, setup = config.stash[RESULTS], config.stash[SETTINGS]
    if not results.measurements:
        return
    env = environment(setup)
    cpu = env["cpu"]
    terminalreporter.section("edge-ssl performance targets")
    terminalreporter.write_line(
        f"{cpu['name']} ({cpu['machine']}, {cpu['logical_cores']} logical cores; "
        f"{', '.join(cpu['features']) or 'no AVX2/AVX-512/VNNI'}), {setup.threads} threads, "
        f"medians; " + ", ".join(f"{k} {v}" for k, v in env["versions"].items()))
    for line in bench_report.format_targets(bench_report.targets(results, _has_vnni())):
        terminalreporter.write_line(line)
    terminalreporter.write_line("")
    for line in bench_report.format_measurements(results):
        terminalreporter.write_line(line)
