"""`edge-ssl demo`: the whole product in a few minutes on a CPU, on the built-in demo data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from edge_ssl.commands import shared_options as shared
from edge_ssl.console import console, err_console, user_errors
from edge_ssl.help_format import OUTPUT, TRAINING
from edge_ssl.train.config import TrainConfig

DEMO_IMAGES = "demo-images"


@user_errors
def demo(
    per_class: Annotated[int, typer.Option(
        min=1, metavar="N", rich_help_panel=TRAINING,
        help="Demo training images per class.")] = 300,
    pretext_epochs: Annotated[int, typer.Option(
        min=1, metavar="N", rich_help_panel=TRAINING, help="Pretext epochs.")] = 2,
    finetune_epochs: Annotated[int, typer.Option(
        min=1, metavar="N", rich_help_panel=TRAINING, help="Fine-tune epochs.")] = 5,
    width: Annotated[float, typer.Option(
        metavar="ALPHA", rich_help_panel=TRAINING, help="MobileNetV2 width multiplier.")] = 1.0,
    image_size: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=TRAINING, help="Side of the square training images.")]
        = 64,
    int8: Annotated[bool, typer.Option(
        "--int8/--no-int8", rich_help_panel=OUTPUT,
        help="Also export and verify the INT8 variant.")] = True,
    runs_dir: Annotated[Path, typer.Option(
        metavar="DIR", rich_help_panel=OUTPUT, help="Where the run directory goes.")]
        = Path("runs"),
    name: Annotated[str, typer.Option(
        metavar="NAME", rich_help_panel=OUTPUT, help="Run name.")] = "demo",
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=OUTPUT, help="Replace an earlier demo run.")] = False,
    verbose: shared.Verbose = False,
) -> None:
    """Train on demo data with short settings, export to ONNX (FP32 + INT8), write demo
    images and classify them: every stage of edge-ssl, end to end."""
    from edge_ssl.commands.classify import classify
    from edge_ssl.commands.export import report_table
    from edge_ssl.contract import CLASSIFIER_ONNX, EXPORTS_DIR
    from edge_ssl.export.config import ExportConfig
    from edge_ssl.quiet import import_tensorflow
    from edge_ssl.rundir import create_run_dir
    from edge_ssl.train import demo_data

    config = TrainConfig(demo_per_class=per_class, pretext_epochs=pretext_epochs,
                         finetune_epochs=finetune_epochs, width=width, image_size=image_size)
    run = create_run_dir(runs_dir, name, overwrite, resumable=False)
    console.rule("1/3 train: rotation pretext, then fine-tune (duck vs fish)")
    import_tensorflow(verbose)
    from edge_ssl.export.pipeline import export_run
    from edge_ssl.train.run import train

    report = train(config, run)
    console.rule(f"2/3 export: verified ONNX, FP32{' and INT8' if int8 else ''}")
    exported = export_run(ExportConfig(run_dir=run, int8=int8))
    console.print(report_table(exported))
    for problem in (exported.frames_warning(), exported.rejection()):
        if problem is not None:  # the demo goes on with the files that were written
            err_console.print(f"[yellow]warning:[/] {escape(problem)}", soft_wrap=True)
    console.rule("3/3 classify: onnxruntime only, on fresh demo images")
    images = run / DEMO_IMAGES
    demo_data.write(images, n_per_class=8, seed=config.seed + 7919, image_size=image_size)
    model = run / EXPORTS_DIR / CLASSIFIER_ONNX
    classify(paths=[images / label for label in demo_data.CLASSES], model=model)
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
        f"                edge-ssl train --data YOUR_IMAGES --baseline")
