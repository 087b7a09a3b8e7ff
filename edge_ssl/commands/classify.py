"""`edge-ssl classify`: label files and folders of images with an exported model."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.markup import escape

from edge_ssl import exit_codes
from edge_ssl.console import console, err_console, fail, user_errors
from edge_ssl.errors import ConfigError, DataError, EdgeSslError
from edge_ssl.help_format import INPUT, OUTPUT, RUNTIME
from edge_ssl.runtime.model import Device


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


@user_errors
def classify(
    paths: Annotated[list[Path], typer.Argument(
        metavar="PATH...", show_default=False,
        help="Image files and folders (JPEG, PNG, BMP, WebP, GIF, TIFF).")],
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", metavar="FILE", rich_help_panel=INPUT, show_default=False,
        help="ONNX model written by `edge-ssl export` "
             "(default: the classifier of runs/latest).")] = None,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", rich_help_panel=INPUT,
        help="Also classify the images in subfolders.")] = False,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", dir_okay=False, metavar="FILE", rich_help_panel=OUTPUT,
        show_default=False,
        help="Write one row per file to this .csv or .jsonl file, as images finish, instead "
             "of a table.")] = None,
    top_k: Annotated[int, typer.Option(
        min=1, metavar="K", rich_help_panel=OUTPUT,
        help="Also report the next best labels, up to this many in all.")] = 1,
    progress: Annotated[bool | None, typer.Option(
        "--progress/--no-progress", rich_help_panel=OUTPUT, show_default=False,
        help="Draw a progress bar on the terminal (default: for 256 files or more). Never "
             "when piped.")] = None,
    batch_size: Annotated[int, typer.Option(
        min=1, metavar="N", rich_help_panel=RUNTIME, help="Images per inference call.")] = 32,
    device: Annotated[Device, typer.Option(
        case_sensitive=False, metavar="DEVICE", rich_help_panel=RUNTIME,
        help="Execution provider: auto (CUDA when it starts, else the CPU), cpu, cuda or "
             "tensorrt.")] = Device.AUTO,
    threads: Annotated[int | None, typer.Option(
        min=1, metavar="N", rich_help_panel=RUNTIME, show_default=False,
        help="onnxruntime intra-op threads (default: one per core).")] = None,
) -> None:
    """Label images with an exported model; the rotation model reports each image's rotation.

    Files that cannot be read are reported and skipped (with their error in --output).
    Exit status: 0 all classified, 1 some skipped, 2 usage error, 3 nothing classified,
    4 model or runtime failure, 130 interrupted / 143 terminated (rows done so far kept in
    --output).
    """
    from edge_ssl.runtime import report
    from edge_ssl.runtime.classify import ClassifyConfig
    from edge_ssl.runtime.classify import classify as run

    try:
        config = ClassifyConfig(tuple(paths), model=model, recursive=recursive,
                                batch_size=batch_size, top_k=top_k, device=device,
                                threads=threads, output=output)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    printer = report.RowPrinter(console, err_console, predictions=output is None)
    try:
        with _sigterm_as_interrupt(), report.progress_bar(err_console, progress) as bar:
            result = run(config, bar, on_rows=printer.rows, on_start=printer.start)
    except KeyboardInterrupt as exc:
        terminated = isinstance(exc, _Terminated)
        kept = (f"; {printer.seen:,} finished rows are in {escape(str(output))}"
                if output and printer.seen else "")
        err_console.print(f"{'terminated' if terminated else 'interrupted'}{kept}",
                          soft_wrap=True)
        raise typer.Exit(exit_codes.TERMINATED if terminated else exit_codes.INTERRUPTED
                         ) from None
    except ConfigError as exc:
        raise fail(str(exc), exit_codes.USAGE) from None
    except DataError as exc:
        raise fail(str(exc), exit_codes.NOTHING_DONE) from None
    except EdgeSslError as exc:  # the model, its device, or onnxruntime while running it
        kept = (f" The {printer.seen:,} rows finished before it are in {output}."
                if output and printer.seen else "")
        raise fail(f"{exc}{kept}", exit_codes.MODEL_FAILURE) from None
    if not result.classified:
        raise fail(f"none of the {len(result.failures):,} files could be classified.",
                   exit_codes.NOTHING_DONE)
    report.print_summary(result, console)
    if result.failures:
        raise typer.Exit(exit_codes.SOME_SKIPPED)
