"""`edge-ssl bench`: latency and throughput of exported models, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edge_ssl.commands.config_options import config_options
from edge_ssl.console import console, user_errors
from edge_ssl.errors import EdgeSslError
from edge_ssl.options import OUTPUT
from edge_ssl.runtime.latency import BenchConfig


@user_errors
@config_options(BenchConfig)
def bench(
    options: dict[str, Any],
    json_path: Annotated[Path | None, typer.Option(
        "--json", dir_okay=False, metavar="FILE", rich_help_panel=OUTPUT, show_default=False,
        help="Also write every result and the CPU's description to this JSON file.")] = None,
) -> None:
    """Time models on random images at their native size: p50/p90/p99 latency, images/s, each
    batch size in its fastest layout of sessions and threads."""
    import dataclasses

    from edge_ssl import atomic
    from edge_ssl.commands.render_runtime import bench_summary, bench_tables
    from edge_ssl.runtime.latency import bench as run

    config = BenchConfig(**options)
    with console.status("timing…"):
        result = run(config)
    console.print(*bench_tables(result))
    for line in bench_summary(result):
        console.print(line)
    if json_path is not None:
        try:
            atomic.write_json(json_path, dataclasses.asdict(result))
        except OSError as exc:
            raise EdgeSslError(f"{json_path}: cannot write ({exc.strerror}); "
                               "choose another --json path.") from None
        console.print(f"wrote {json_path}")
