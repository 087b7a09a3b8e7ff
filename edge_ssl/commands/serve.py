"""`edge-ssl serve`: an exported model behind an HTTP endpoint."""

from __future__ import annotations

from typing import Any

from rich.markup import escape

from edge_ssl.commands.config_options import config_options
from edge_ssl.console import console, user_errors
from edge_ssl.runtime.serve import ServeConfig


@user_errors(detailed=True)
@config_options(ServeConfig)
def serve(options: dict[str, Any]) -> None:
    """Serve a model over HTTP: POST /classify (an image body, or multipart files) answers
    labels and probabilities as JSON; GET /model gives its metadata, GET /health its state.

    Concurrent requests are batched; every bad request gets a 4xx JSON error and the service
    keeps running. Listens on 127.0.0.1 unless --host says otherwise. Needs pip install
    'edge-ssl\\[serve]'. Stop it with Ctrl-C.
    """
    from edge_ssl.runtime.parallel import Runner
    from edge_ssl.runtime.serve import serve as run

    config = ServeConfig(**options)

    def ready(runner: Runner) -> None:
        where = f"http://{config.host}:{config.port}"
        console.print(f"serving {escape(str(runner.info.path))} ({len(runner.info.labels)} "
                      f"labels, {runner.provider}, {runner.layout}) on {where}: POST "
                      f"{where}/classify, GET /model, GET /health; Ctrl-C stops it",
                      soft_wrap=True)

    run(config, on_ready=ready)
