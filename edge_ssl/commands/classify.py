"""`edge-ssl classify`: label files and folders of images with an exported model (design §9)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge_ssl.console import console, err_console, fail, user_errors
from edge_ssl.errors import EdgeSslError
from edge_ssl.runtime.model import Device

SOME_FAILED = 1
NOTHING_CLASSIFIED = 2


@user_errors
def classify(
    paths: Annotated[list[Path], typer.Argument(
        help="Image files and folders (JPEG, PNG, BMP, WebP, GIF, TIFF).", show_default=False)],
    model: Annotated[Path | None, typer.Option(
        "--model", "-m", show_default=False,
        help="ONNX model written by `edge-ssl export` "
             "(default: the classifier of runs/latest).")] = None,
    recursive: Annotated[bool, typer.Option(
        "--recursive", "-r", help="Also classify the images in subfolders.")] = False,
    batch_size: Annotated[int, typer.Option(min=1, help="Images per inference call.")] = 32,
    top_k: Annotated[int, typer.Option(
        min=1, help="Also report the next best labels, up to this many in all.")] = 1,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", dir_okay=False, show_default=False,
        help="Write the predictions to this .csv or .jsonl file instead of a table.")] = None,
    device: Annotated[Device, typer.Option(
        case_sensitive=False,
        help="Execution provider; auto takes CUDA when it starts, else the CPU.")] = Device.AUTO,
    threads: Annotated[int | None, typer.Option(
        min=1, show_default=False,
        help="onnxruntime intra-op threads (default: one per core).")] = None,
) -> None:
    """Label images with an exported model; the rotation model reports each image's rotation.

    Files that cannot be read are reported and skipped.
    Exit status: 0 all classified, 1 some skipped, 2 none (no images, unusable model or device).
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
    try:
        with report.progress_bar(err_console) as progress:
            result = run(config, progress)
    except EdgeSslError as exc:
        raise fail(str(exc), NOTHING_CLASSIFIED) from None
    report.print_failures(result, err_console)
    if not result.predictions:
        raise fail(f"none of the {len(result.failures):,} files could be classified.",
                   NOTHING_CLASSIFIED)
    if output is None:
        report.print_predictions(result, console)
    report.print_summary(result, console)
    if result.failures:
        raise typer.Exit(SOME_FAILED)
