"""`edge-ssl classify`: label files and folders of images with an exported model."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import typer
from rich.markup import escape

from edge_ssl import exit_codes
from edge_ssl.commands.config_options import config_options
from edge_ssl.commands.shared_options import Progress
from edge_ssl.console import console, err_console, fail, user_errors
from edge_ssl.errors import DeviceError, InferenceError, ModelError
from edge_ssl.runtime.classify import ClassifyConfig


class _Terminated(KeyboardInterrupt):
    """SIGTERM (`kill`, a scheduler's time limit), stopped like Ctrl-C so that rows are kept."""


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def stop(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set signal handlers
        return
    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@user_errors(detailed=True)
@config_options(ClassifyConfig)
def classify(options: dict[str, Any], progress: Progress = None) -> None:
    """Label images with an exported model; the rotation model reports each image's rotation.

    Files that cannot be read are reported and skipped (with their error in --output).
    Exit status: 0 all classified, 1 some skipped, 2 usage error, 3 nothing classified,
    4 model or runtime failure, 130 interrupted / 143 terminated (rows done so far kept in
    --output).
    """
    from edge_ssl.commands import render_runtime as report
    from edge_ssl.runtime.classify import classify as run

    config = ClassifyConfig(**options)
    output = config.output
    printer = report.RowPrinter(console, err_console, predictions=output is None)
    try:
        with _sigterm_as_interrupt(), report.progress_bar(err_console, progress):
            result = run(config, on_rows=printer.rows, on_start=printer.start)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        kept = (f"; {printer.seen:,} finished rows are in {escape(str(output))}"
                if output and printer.seen else "")
        err_console.print(f"{'terminated' if terminated else 'interrupted'}{kept}",
                          soft_wrap=True)
        raise typer.Exit(exit_codes.TERMINATED if terminated else exit_codes.INTERRUPTED
                         ) from None
    except (ModelError, DeviceError, InferenceError) as exc:
        kept = (f" The {printer.seen:,} rows finished before it are in {output}."
                if output and printer.seen else "")
        raise fail(f"{exc}{kept}", exc.exit_code) from None
    if not result.classified:
        raise fail(f"none of the {len(result.failures):,} files could be classified.",
                   exit_codes.NOTHING_DONE)
    report.print_summary(result, console)
    if result.failures:
        raise typer.Exit(exit_codes.SOME_SKIPPED)
