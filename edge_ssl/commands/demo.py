"""`edge-ssl demo`: the whole product in a few minutes on a CPU, on the built-in demo data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edge_ssl.commands.config_options import config_options
from edge_ssl.commands.shared_options import RunsDir, Verbose
from edge_ssl.console import console, err_console, spinner, user_errors, warn
from edge_ssl.options import OUTPUT
from edge_ssl.train.config import TrainConfig

DEMO_IMAGES = "demo-images"


@user_errors
@config_options(TrainConfig, ["demo_per_class", "pretext_epochs", "finetune_epochs",
                              "finetune_steps", "width", "image_size"],
                # A quick tour: one pass over the labels an epoch, not a step budget.
                defaults={"demo_per_class": 300, "pretext_epochs": 2, "finetune_epochs": 5,
                          "finetune_steps": 0},
                flags={"demo_per_class": "--per-class"})
def demo(
    options: dict[str, Any],
    int8: Annotated[bool, typer.Option(
        "--int8/--no-int8", rich_help_panel=OUTPUT,
        help="Also export and verify the INT8 variant.")] = True,
    runs_dir: RunsDir = Path("runs"),
    name: Annotated[str, typer.Option(
        metavar="NAME", rich_help_panel=OUTPUT, help="Run name.")] = "demo",
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=OUTPUT, help="Replace an earlier demo run.")] = False,
    verbose: Verbose = False,
) -> None:
    """Train on demo data with short settings, export to ONNX (FP32 + INT8), write demo
    images and classify them: every stage of edge-ssl, end to end."""
    from edge_ssl.commands.render_runtime import RowPrinter, print_summary
    from edge_ssl.commands.render_training import export_tables
    from edge_ssl.contract import CLASSIFIER_ONNX, EXPORTS_DIR
    from edge_ssl.export.config import ExportConfig
    from edge_ssl.rundir import create_run_dir
    from edge_ssl.runtime.classify import ClassifyConfig, classify
    from edge_ssl.start_tensorflow import start_tensorflow
    from edge_ssl.train import demo_data

    config = TrainConfig(**options)
    run = create_run_dir(runs_dir, name, overwrite, resumable=False)
    console.rule("1/3 train: rotation pretext, then fine-tune (duck vs fish)")
    start_tensorflow(verbose)
    from edge_ssl.export.pipeline import export_run
    from edge_ssl.train.run import train

    report = train(config, run)
    console.rule(f"2/3 export: verified ONNX, FP32{' and INT8' if int8 else ''}")
    with spinner("exporting"):
        exported = export_run(ExportConfig(run_dir=run, int8=int8))
    console.print(*export_tables(exported))
    for problem in (exported.frames_warning(), exported.rejection()):
        if problem is not None:  # the demo goes on with the files that were written
            warn(problem)
    console.rule("3/3 classify: onnxruntime only, on fresh demo images")
    images = run / DEMO_IMAGES
    demo_data.write(images, n_per_class=8, seed=config.seed + 7919, image_size=config.image_size)
    model = run / EXPORTS_DIR / CLASSIFIER_ONNX
    printer = RowPrinter(console, err_console, predictions=True)
    print_summary(classify(ClassifyConfig(tuple(images / label for label in demo_data.CLASSES),
                                          model=model),
                           on_rows=printer.rows, on_start=printer.start), console)
    console.rule("done")
    console.print(
        f"run directory   {run}\n"
        f"held-out        pretext {report['pretext']['heldout_rotation']['percent']:.1f}% "
        f"rotation accuracy, classifier "
        f"{report['methods']['ssl_finetune']['test']['percent']:.1f}% test accuracy\n"
        f"ONNX models     {run / EXPORTS_DIR}\n"
        f"demo images     {images}\n"
        f"try next        edge-ssl classify {images} --recursive --model {model}\n"
        f"                edge-ssl bench {run / EXPORTS_DIR}/*.onnx\n"
        f"                edge-ssl train --data YOUR_IMAGES --baseline",
        soft_wrap=True)  # the commands stay whole, to be copied
