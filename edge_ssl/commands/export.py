"""`edge-ssl export`: a run's two Keras models → verified ONNX files in RUN/exports (design §8)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edge_ssl.console import console, user_errors
from edge_ssl.contract import EXPORT_REPORT
from edge_ssl.export.config import ExportConfig

if TYPE_CHECKING:
    from edge_ssl.export.report import ExportReport
    from edge_ssl.export.verify import Check


@user_errors
def export(
    run: Annotated[Path, typer.Argument(
        help="Run directory written by `edge-ssl train`.")] = Path("runs/latest"),
    opset: Annotated[int, typer.Option(help="ONNX opset (13–18).")] = 17,
    int8: Annotated[bool, typer.Option(
        "--int8", help="Also write static-QDQ INT8 variants (*.int8.onnx).")] = False,
    fp16: Annotated[bool, typer.Option(
        "--fp16", help="Also write FP16 variants with FP32 inputs/outputs (*.fp16.onnx).")]
        = False,
    calibration_images: Annotated[int, typer.Option(
        help="Most stored training images used to calibrate INT8.")] = 100,
    max_int8_drop: Annotated[float, typer.Option(
        help="Accuracy points an INT8 or FP16 variant may lose against FP32.")] = 1.0,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Replace an existing RUN/exports folder.")] = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", help="Show TensorFlow's and tf2onnx's own log lines.")] = False,
) -> None:
    """Convert the pretext and classifier models to ONNX with the preprocessing inside, and
    prove each file matches Keras before writing it."""
    from edge_ssl.quiet import import_tensorflow

    config = ExportConfig(run_dir=run, opset=opset, int8=int8, fp16=fp16,
                          calibration_images=calibration_images, max_int8_drop=max_int8_drop,
                          overwrite=overwrite)
    import_tensorflow(verbose)
    from edge_ssl.export.pipeline import export_run

    with console.status("exporting…") as status:
        report = export_run(config, log=lambda message: status.update(f"{message}…"))
    console.print(report_table(report))
    console.print(f"Wrote {len(report.files)} ONNX files with {EXPORT_REPORT} to "
                  f"{report.exports_dir}")


def report_table(report: ExportReport) -> Table:
    """One row per file: size, held-out accuracy, checks passed and the deciding numbers.

    Every check with all its numbers is in export_report.json.
    """
    table = Table(title=f"edge-ssl export — {report.run}")
    table.add_column("file", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("accuracy", justify="right")
    table.add_column("checks", justify="right")
    table.add_column("evidence", overflow="fold")
    for exported in report.files:
        passed = sum(check.passed for check in exported.checks)
        accuracy = "–" if exported.accuracy is None else f"{exported.accuracy:.2f}%"
        table.add_row(exported.file, f"{exported.size_bytes / 1e6:.2f} MB", accuracy,
                      f"{passed}/{len(exported.checks)}", escape(_evidence(exported.checks)))
    return table


def _evidence(checks: list[Check]) -> str:
    parity = [c.values for c in checks if "max_abs_diff" in c.values]
    gate = [c.values for c in checks if "drop_points" in c.values]
    if parity:
        worst = max(values["max_abs_diff"] for values in parity)
        top1 = sum(values["top1_mismatches"] for values in parity)
        return (f"vs Keras at {len(parity)} sizes/batches: max |Δp| {worst:.1e} "
                f"(≤ {parity[0]['tolerance']:.0e}), {top1} top-1 changes")
    if gate:
        values = gate[0]
        return (f"vs FP32: {-values['drop_points']:+.2f} points (may lose "
                f"{values['max_drop_points']:g}), top-1 agrees on {values['top1_agreement']:.1f}%")
    return "; ".join(c.detail for c in checks)
