"""`edge-ssl export`: a run's two Keras models → verified ONNX files in RUN/exports."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from edge_ssl import exit_codes
from edge_ssl.commands.config_options import config_options
from edge_ssl.commands.render_training import export_tables
from edge_ssl.console import console, fail, spinner, user_errors, warn
from edge_ssl.contract import EXPORT_REPORT
from edge_ssl.export.config import ExportConfig
from edge_ssl.options import OUTPUT


@user_errors
@config_options(ExportConfig)
def export(options: dict[str, Any], verbose: Annotated[bool, typer.Option(
        "--verbose", rich_help_panel=OUTPUT,
        help="Show TensorFlow's and tf2onnx's own log lines.")] = False) -> None:
    """Convert the pretext and classifier models to ONNX with the preprocessing inside, and
    prove each file matches Keras before writing it.

    Each model gets an any-size file and a fixed-size one (*.fixed.onnx, no Resize: for
    TensorRT, WebGPU, WebNN), and with --ort their onnxruntime-mobile (.ort) twins.

    An INT8 or FP16 variant that misses its gate is not written; the FP32 files are.
    Exit status: 0 all written, 1 nothing written, 2 usage error, 3 a variant left out.
    """
    from edge_ssl.start_tensorflow import start_tensorflow

    config = ExportConfig(**options)
    start_tensorflow(verbose)
    from edge_ssl.export.pipeline import export_run

    with spinner("exporting"):
        report = export_run(config)
    console.print(*export_tables(report))
    console.print(f"Wrote {len(report.written)} model files with {EXPORT_REPORT} to "
                  f"{report.exports_dir}")
    warning = report.frames_warning()
    if warning is not None:
        warn(warning)
    rejection = report.rejection()
    if rejection is not None:
        raise fail(rejection, exit_codes.VARIANT_REJECTED)
