"""`edge-ssl evaluate`: exported models on a labelled folder, side by side."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape

from edge_ssl import exit_codes
from edge_ssl.commands.config_options import config_options
from edge_ssl.commands.shared_options import Progress
from edge_ssl.console import console, err_console, user_errors
from edge_ssl.runtime.evaluate import EvaluateConfig


@user_errors(detailed=True)
@config_options(EvaluateConfig)
def evaluate(options: dict[str, Any], progress: Progress = None) -> None:
    """Accuracy (with n and a 95% interval), per-class precision/recall/F1, confusion matrix,
    misclassified files, top-1 agreement and latency of each model on labelled images.

    Labels are matched by name with each model's metadata; a class the model does not know is
    an error. Uses onnxruntime only.
    Exit status: 0 all images evaluated, 1 some skipped, 2 usage error, 3 nothing evaluated
    (no images, or classes the model does not know), 4 model or runtime failure.
    """
    from edge_ssl.commands import render_runtime as report
    from edge_ssl.runtime.evaluate import REPORT_FILE
    from edge_ssl.runtime.evaluate import evaluate as run

    config = EvaluateConfig(**options)
    with report.progress_bar(err_console, progress, "evaluating"):
        result = run(config)
    for path, reason in result.failures.items():
        err_console.print(f"[yellow]skipped[/] {escape(f'{path}: {reason}')}", soft_wrap=True)
    console.print(*report.evaluation_tables(result))
    console.print(f"confusion matrices, misclassified files and {REPORT_FILE} in "
                  f"{escape(str(result.output_dir))}", soft_wrap=True)
    if result.failures:
        raise typer.Exit(exit_codes.SOME_SKIPPED)
