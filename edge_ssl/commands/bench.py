"""`edge-ssl bench`: latency and throughput of exported models, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge_ssl.console import console, user_errors
from edge_ssl.errors import EdgeSslError
from edge_ssl.runtime.model import Device


@user_errors
def bench(
    models: Annotated[list[Path], typer.Argument(
        metavar="MODEL...", show_default=False,
        help="ONNX models written by `edge-ssl export`, e.g. an FP32 and an INT8 variant.")],
    batch_sizes: Annotated[str, typer.Option(
        metavar="N,N", help="Comma-separated batch sizes to time.")] = "1,8,32",
    warmup: Annotated[int, typer.Option(
        min=0, metavar="N", help="Untimed runs per batch size.")] = 10,
    iterations: Annotated[int, typer.Option(
        min=1, metavar="N", help="Timed runs per batch size.")] = 100,
    threads: Annotated[int | None, typer.Option(
        min=1, metavar="N", show_default=False,
        help="onnxruntime intra-op threads (default: one per core).")] = None,
    device: Annotated[Device, typer.Option(
        case_sensitive=False, metavar="DEVICE",
        help="Execution provider: auto (CUDA when it starts, else the CPU), cpu, cuda or "
             "tensorrt.")] = Device.AUTO,
    json_path: Annotated[Path | None, typer.Option(
        "--json", dir_okay=False, metavar="FILE", show_default=False,
        help="Also write every result and the CPU's description to this JSON file.")] = None,
) -> None:
    """Time models on random images at their native size: p50/p90/p99 latency, images/s."""
    import dataclasses

    from edge_ssl import atomic
    from edge_ssl.runtime.bench import BenchConfig
    from edge_ssl.runtime.bench import bench as run
    from edge_ssl.runtime.report import bench_tables

    config = BenchConfig(tuple(models), batch_sizes=_batch_sizes(batch_sizes), warmup=warmup,
                         iterations=iterations, threads=threads, device=device)
    with console.status("timing…"):
        result = run(config)
    console.print(*bench_tables(result))
    if json_path is not None:
        try:
            atomic.write_json(json_path, dataclasses.asdict(result))
        except OSError as exc:
            raise EdgeSslError(f"{json_path}: cannot write ({exc.strerror}); "
                               "choose another --json path.") from None
        console.print(f"wrote {json_path}")


def _batch_sizes(text: str) -> tuple[int, ...]:
    try:
        sizes = tuple(int(size) for size in text.split(","))
    except ValueError:
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise typer.BadParameter(f"{text!r} is not a comma-separated list of positive integers "
                                 "such as 1,8,32.", param_hint="--batch-sizes")
    return sizes
