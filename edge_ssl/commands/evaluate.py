"""`edge-ssl evaluate`: exported models on a labelled folder, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edge_ssl import exit_codes
from edge_ssl.console import console, err_console, fail, user_errors
from edge_ssl.errors import ConfigError, DataError, EdgeSslError
from edge_ssl.help_format import DATA, OUTPUT, RUNTIME
from edge_ssl.runtime.model import Device


@user_errors
def evaluate(
    models: Annotated[list[Path], typer.Argument(
        metavar="MODEL...", show_default=False,
        help="ONNX models written by `edge-ssl export`, e.g. classifier.onnx and its "
             "int8 and fp16 variants.")],
    data: Annotated[Path, typer.Option(
        "--data", "-d", metavar="DIR", rich_help_panel=DATA, show_default=False,
        help="Labelled images: DIR/<class>/*.jpg, or a Tiny ImageNet folder (its val/).")],
    classes: Annotated[str | None, typer.Option(
        metavar="A,B", rich_help_panel=DATA, show_default=False,
        help="Only these classes, comma-separated: folder names, wnids or labels.")] = None,
    output_dir: Annotated[Path | None, typer.Option(
        "--output-dir", "-o", file_okay=False, metavar="DIR", rich_help_panel=OUTPUT,
        show_default=False,
        help="Where the PNGs, CSVs and evaluation.json go (default: "
             "evaluations/<UTC time>).")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=OUTPUT,
        help="Write into an --output-dir that is not empty.")] = False,
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
    """Accuracy (with n and a 95% interval), per-class precision/recall/F1, confusion matrix,
    misclassified files, top-1 agreement and latency of each model on labelled images.

    Labels are matched by name with each model's metadata; a class the model does not know is
    an error. Uses onnxruntime only.
    Exit status: 0 all images evaluated, 1 some skipped, 2 usage error, 3 nothing evaluated
    (no images, or classes the model does not know), 4 model or runtime failure.
    """
    from edge_ssl.runtime import report
    from edge_ssl.runtime.evaluate import REPORT_FILE, EvaluateConfig
    from edge_ssl.runtime.evaluate import evaluate as run

    names = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else ()
    config = EvaluateConfig(tuple(models), data, classes=names, output_dir=output_dir,
                            overwrite=overwrite, batch_size=batch_size, device=device,
                            threads=threads)
    try:
        with report.progress_bar(err_console, progress, "evaluating") as bar:
            result = run(config, bar)
    except ConfigError as exc:
        raise fail(str(exc), exit_codes.USAGE) from None
    except DataError as exc:
        raise fail(str(exc), exit_codes.NOTHING_DONE) from None
    except EdgeSslError as exc:  # a model, its device, or onnxruntime while running it
        raise fail(str(exc), exit_codes.MODEL_FAILURE) from None
    for path, reason in result.failures.items():
        err_console.print(f"[yellow]skipped[/] {escape(f'{path}: {reason}')}", soft_wrap=True)
    console.print(*report.evaluation_tables(result))
    console.print(f"confusion matrices, misclassified files and {REPORT_FILE} in "
                  f"{escape(str(result.output_dir))}", soft_wrap=True)
    if result.failures:
        raise typer.Exit(exit_codes.SOME_SKIPPED)
