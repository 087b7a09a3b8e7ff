"""`edge-ssl serve` under load: requests/s and p50/p99 latency at 1 and 8 concurrent clients,
with batching (the defaults) and without it (`--batch-size 1`).

The service runs as its own process, started with the CLI as a user would, so that the clients'
threads in this process do not share its interpreter; each client sends one JPEG per request,
back to back. The numbers go to the summary after the performance targets, and the ratio
"batched / unbatched requests/s at 8 clients" says what batching buys.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import bench_models
import numpy as np
import pytest
from bench_models import Settings
from bench_report import Results

from edge_ssl.images import list_images

pytest.importorskip("uvicorn", reason="pip install 'edge-ssl[serve]'")
pytestmark = pytest.mark.benchmark(group="serve")

MODES = {"batched": [], "unbatched": ["--batch-size", "1"]}


@contextmanager
def service(model: Path, extra: list[str]) -> Iterator[str]:
    """`edge-ssl serve` on a free port until the block ends; its URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [*bench_models.edge_ssl_command(), "serve", str(model), "--port", str(port),
               "--device", "cpu", *extra]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, env={**os.environ, "COLUMNS": "1000"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "the service did not start in 60 s"
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(10)


def load(url: str, bodies: list[bytes], clients: int, per_client: int
         ) -> tuple[float, np.ndarray]:
    """(seconds for all requests, each request's latency): `clients` threads, back to back."""
    def client(number: int) -> list[float]:
        latencies = []
        for k in range(per_client):
            body = bodies[(number * per_client + k) % len(bodies)]
            call = urllib.request.Request(f"{url}/classify", data=body,
                                          headers={"Content-Type": "image/jpeg"})
            start = time.perf_counter()
            with urllib.request.urlopen(call, timeout=60) as response:
                assert response.status == 200
                response.read()
            latencies.append(time.perf_counter() - start)
        return latencies

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = [t for ts in pool.map(client, range(clients)) for t in ts]
    return time.perf_counter() - start, np.array(latencies)


@pytest.mark.parametrize("mode", list(MODES))
def test_serve(mode: str, bench_run: Path, jpegs: Path, settings: Settings, results: Results,
               benchmark: Any) -> None:
    bodies = [path.read_bytes() for path in list_images(jpegs, recursive=True)[:64]]
    per_client = 200 if settings.full else 4
    measured: dict[int, tuple[float, np.ndarray]] = {}

    def run() -> None:
        with service(bench_models.onnx_file(bench_run, "fp32"), MODES[mode]) as url:
            load(url, bodies, 1, 4)  # warm-up
            for clients in (1, 8):
                measured[clients] = load(url, bodies, clients, per_client)

    record: Callable[..., Any] = benchmark if benchmark.disabled else (
        lambda fn: benchmark.pedantic(fn, rounds=1, iterations=1))
    record(run)
    for clients, (seconds, latencies) in measured.items():
        p50, p99 = np.percentile(latencies, [50, 99])
        results.serving[f"serve-{mode}-c{clients}"] = {
            "requests_per_s": len(latencies) / seconds, "p50_ms": p50 * 1e3,
            "p99_ms": p99 * 1e3, "requests": len(latencies)}
    benchmark.extra_info.update(results.serving)
