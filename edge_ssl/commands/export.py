"""`edge-ssl export`: a run's two Keras models → verified ONNX files in RUN/exports."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from edge_ssl.console import console, err_console, fail, user_errors
from edge_ssl.contract import EXPORT_REPORT
from edge_ssl.export.config import ExportConfig
from edge_ssl.help_format import OUTPUT

# Exit status: 0 every file written; 1 nothing written (an error, or an FP32 file failed a
# check); 2 a usage error; 3 the FP32 files were written but an INT8/FP16 variant missed its
# gate and was left out.
VARIANT_REJECTED = 3
CONVERSION = "Conversion"
VARIANTS = "INT8 and FP16 variants"

if TYPE_CHECKING:
    from edge_ssl.export.report import ExportReport
    from edge_ssl.export.verify import Check


@user_errors
def export(
    run: Annotated[Path, typer.Argument(
        metavar="RUN", help="Run directory written by `edge-ssl train`.")] = Path("runs/latest"),
    opset: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=CONVERSION,
        help="ONNX opset; 18, the first with the antialiased Resize the preprocessing needs.")]
        = 18,
    seed: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=CONVERSION, help="Seed of the checks' image samples.")] = 0,
    int8: Annotated[bool, typer.Option(
        "--int8", rich_help_panel=VARIANTS,
        help="Also write static-QDQ INT8 variants (*.int8.onnx).")] = False,
    fp16: Annotated[bool, typer.Option(
        "--fp16", rich_help_panel=VARIANTS,
        help="Also write FP16 variants with FP32 inputs/outputs (*.fp16.onnx).")] = False,
    calibration_images: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=VARIANTS,
        help="Most stored training images used to calibrate INT8.")] = 100,
    min_int8_agreement: Annotated[float, typer.Option(
        metavar="PERCENT", rich_help_panel=VARIANTS,
        help="INT8 gate: % of held-out images whose top-1 must equal FP32's.")] = 99.0,
    max_fp32_nodes: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=VARIANTS,
        help="Most nodes INT8 may keep in FP32 to meet its gate (0: no fallback).")] = 16,
    fp16_tolerance: Annotated[float, typer.Option(
        metavar="P", rich_help_panel=VARIANTS,
        help="FP16 gate: largest |Δprobability| allowed against FP32.")] = 0.05,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=OUTPUT, help="Replace an existing RUN/exports folder.")]
        = False,
    verbose: Annotated[bool, typer.Option(
        "--verbose", rich_help_panel=OUTPUT,
        help="Show TensorFlow's and tf2onnx's own log lines.")] = False,
) -> None:
    """Convert the pretext and classifier models to ONNX with the preprocessing inside, and
    prove each file matches Keras before writing it.

    An INT8 or FP16 variant that misses its gate is not written; the FP32 files are.
    Exit status: 0 all written, 1 nothing written, 2 usage error, 3 a variant left out.
    """
    from edge_ssl.quiet import import_tensorflow

    config = ExportConfig(run_dir=run, opset=opset, int8=int8, fp16=fp16,
                          calibration_images=calibration_images,
                          min_int8_agreement=min_int8_agreement, max_fp32_nodes=max_fp32_nodes,
                          fp16_tolerance=fp16_tolerance, seed=seed, overwrite=overwrite)
    import_tensorflow(verbose)
    from edge_ssl.export.pipeline import export_run

    with console.status("exporting…") as status:
        report = export_run(config, log=lambda message: status.update(f"{message}…"))
    console.print(report_table(report))
    console.print(f"Wrote {len(report.written)} ONNX files with {EXPORT_REPORT} to "
                  f"{report.exports_dir}")
    warning = report.frames_warning()
    if warning is not None:
        err_console.print(f"[yellow]warning:[/] {escape(warning)}", soft_wrap=True)
    rejection = report.rejection()
    if rejection is not None:
        raise fail(rejection, VARIANT_REJECTED)


def report_table(report: ExportReport) -> Table:
    """One row per file: size, accuracy on the gate sample, checks passed, the deciding numbers.

    Every check with all its numbers is in export_report.json.
    """
    table = Table(title=f"edge-ssl export — {report.run}")
    table.add_column("file", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("accuracy (95% CI)", justify="right")
    table.add_column("checks", justify="right")
    table.add_column("evidence", overflow="fold")
    for exported in report.files:
        passed = sum(check.passed for check in exported.checks)
        accuracy = "–" if exported.accuracy is None else (
            f"{exported.accuracy.percent:.1f}% ({exported.accuracy.ci95[0]:.1f}–"
            f"{exported.accuracy.ci95[1]:.1f})")
        name = exported.file if exported.passed else f"{exported.file} (not written)"
        name += " (!)" if exported.advisories else ""
        evidence = _evidence(exported.checks)
        if exported.rebuilt is not None:
            rebuilt = exported.rebuilt
            evidence += (f"\nfloat32 rebuild of a {rebuilt['trained_precision']} model: top-1 as "
                         f"trained {rebuilt['top1_agreement_vs_trained']['percent']:.1f}%, "
                         f"max |Δp| {rebuilt['max_abs_diff_vs_trained']:.0e}")
        table.add_row(escape(name), f"{exported.size_bytes / 1e6:.2f} MB", accuracy,
                      f"{passed}/{len(exported.checks)}", escape(evidence))
    if any(exported.advisories for exported in report.files):
        table.caption = "(!) raw frames fed to this file change some answers: see the warning"
    return table


def _evidence(checks: list[Check]) -> str:
    """The deciding numbers, one short line per kind of check."""
    lines = []
    parity = [c.values for c in checks if c.name.startswith("parity")]
    if parity:
        worst = max(values["max_abs_diff"] for values in parity)
        top1 = sum(values["top1_mismatches"] for values in parity)
        lines.append(f"vs Keras: max |Δp| {worst:.0e}, {top1} top-1 changes")
    for check in checks:
        values = check.values
        if check.name == "int8 agreement":
            kept = len(values["fp32_nodes"])
            lines.append(f"agrees with FP32 {values['top1_agreement']['percent']:.1f}%"
                         + (f", {kept} nodes FP32" if kept else ""))
        elif check.name == "fp16 |Δp|":
            lines.append(f"vs FP32: max |Δp| {values['max_abs_diff_vs_fp32']:.0e}")
        elif check.name == "resize rule" and check.passed:
            lines.append(f"resize as runtime: ≤ {values['max_abs_pixel_diff']:.1f} grey")
        elif check.name.startswith("raw frames"):
            lines.append(f"raw frames: top-1 as runtime {values['top1_agreement']['percent']:.1f}%")
        elif not check.passed and not check.name.startswith("parity"):
            lines.append(f"{check.name}: {check.detail}")
    return "\n".join(lines)
