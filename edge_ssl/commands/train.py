"""`edge-ssl train`: rotation pretext, then fine-tune, into a resumable run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edge_ssl.commands import shared_options as shared
from edge_ssl.console import console, user_errors
from edge_ssl.errors import EdgeSslError, RunDirError
from edge_ssl.help_format import DATA, MODEL, OUTPUT, TRAINING
from edge_ssl.train.config import (
    DEFAULT_FINETUNE_EPOCHS,
    DEFAULT_HEAD_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_MEMORY_CACHE_GB,
    DEFAULT_SELECTION_FRACTION,
    DEFAULT_STEP_MEMORY_GB,
    FinetuneBatchNorm,
    Freeze,
    PretextDepth,
    PretextLR,
    Rotations,
    Schedule,
    StrategyName,
    TrainConfig,
    load_run_config,
    pretext_top,
)
from edge_ssl.train.layers import DEFAULT_CUT


def split_classes(value: str | None) -> tuple[str, ...]:
    return tuple(c.strip() for c in value.split(",") if c.strip()) if value else ()


def require_tensorboard(config: TrainConfig) -> None:
    """Fail before a run starts, not at its first epoch, when --tensorboard cannot log."""
    import importlib.util

    if config.tensorboard and importlib.util.find_spec("tensorboard") is None:
        raise EdgeSslError("--tensorboard needs the tensorboard package: "
                           "pip install tensorboard (the [train] extra includes it).")


@user_errors
def train(
    ctx: typer.Context,
    data: Annotated[Path | None, typer.Option(
        metavar="DIR", rich_help_panel=DATA, show_default=False,
        help="Tiny ImageNet folder (has wnids.txt) or DIR/<class>/*.jpg; default: demo data.")]
        = None,
    unlabeled: Annotated[Path | None, typer.Option(
        metavar="DIR", rich_help_panel=DATA,
        help="Extra loose images for the pretext (with a class-per-folder --data).")] = None,
    classes: Annotated[str | None, typer.Option(
        metavar="A,B", rich_help_panel=DATA, show_default=False,
        help="Fine-tune classes, comma-separated: wnids, words from words.txt, or folder names.")]
        = None,
    pretext_classes: Annotated[int | None, typer.Option(
        metavar="K", rich_help_panel=DATA,
        help="Tiny ImageNet: pretext on the first K classes only.")] = None,
    labels_per_class: Annotated[int | None, typer.Option(
        metavar="N", rich_help_panel=DATA,
        help="Keep only N labelled images per class for the fine-tune (seeded).")] = None,
    demo_per_class: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=DATA, help="Demo data: training images per class.")] = 500,
    image_size: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=MODEL, help="Side of the square training images.")] = 64,
    width: Annotated[float, typer.Option(
        metavar="ALPHA", rich_help_panel=MODEL, help="MobileNetV2 width multiplier.")] = 1.0,
    backbone_weights: Annotated[Path | None, typer.Option(
        exists=True, dir_okay=False, metavar="FILE", rich_help_panel=MODEL,
        help="Local ImageNet MobileNetV2 no-top .h5 weights; switches rescaling to [-1, 1].")]
        = None,
    bn_momentum: Annotated[float | None, typer.Option(
        metavar="M", rich_help_panel=MODEL, show_default=False,
        help="BatchNorm momentum; default 0.9 (random init) or 0.999 (ImageNet weights).")]
        = None,
    cut: shared.Cut = DEFAULT_CUT,
    pretext_depth: Annotated[PretextDepth, typer.Option(
        metavar="cut|full", rich_help_panel=MODEL,
        help="cut: the pretext trains MobileNetV2 up to --cut, the part the classifier keeps "
             "(faster epochs, better features per CPU-minute); full: the whole network, which "
             "lets `edge-ssl finetune` cut it anywhere.")] = PretextDepth.cut,
    rotations: Annotated[Rotations, typer.Option(
        metavar="all|random", rich_help_panel=TRAINING,
        help="all: the 4 rotations of an image in one batch; random: one per image.")]
        = Rotations.all,
    pretext_lr: Annotated[PretextLR, typer.Option(
        metavar="plateau|cosine", rich_help_panel=TRAINING,
        help="Pretext learning rate: plateau halves it when the held-out loss stalls; cosine "
             "decays it over --pretext-epochs.")] = PretextLR.plateau,
    batch_size: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=TRAINING, help="Samples per batch.")] = 32,
    pretext_epochs: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=TRAINING, help="Most pretext epochs.")] = 100,
    finetune_epochs: shared.FinetuneEpochs = DEFAULT_FINETUNE_EPOCHS,
    head_epochs: shared.HeadEpochs = DEFAULT_HEAD_EPOCHS,
    finetune_batchnorm: shared.FinetuneBatchNormOption = FinetuneBatchNorm.frozen,
    learning_rate: shared.LearningRate = DEFAULT_LEARNING_RATE,
    patience: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=TRAINING,
        help="EarlyStopping patience in epochs (held-out or selection accuracy).")] = 10,
    lr_patience: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=TRAINING,
        help="ReduceLROnPlateau patience (held-out or selection loss, factor 0.5).")] = 4,
    freeze: Annotated[Freeze, typer.Option(
        metavar="none|backbone", rich_help_panel=TRAINING,
        help="backbone: train only the head during the fine-tune.")] = Freeze.none,
    schedule: shared.FinetuneSchedule = Schedule.auto,
    selection_fraction: shared.SelectionFraction = DEFAULT_SELECTION_FRACTION,
    baseline: Annotated[bool, typer.Option(
        "--baseline", rich_help_panel=TRAINING,
        help="Also measure the baselines on the same labels and test images: SSL linear "
             "probe, from scratch (the same network, and a shallow one), random-init probe, "
             "colour histogram.")] = False,
    seed: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=TRAINING,
        help="Seed for splits, sampling and initialisation.")] = 0,
    mixed_precision: Annotated[bool, typer.Option(
        "--mixed-precision", rich_help_panel=TRAINING,
        help="mixed_float16 policy (GPUs); the softmax and the loss stay float32.")] = False,
    strategy: Annotated[StrategyName, typer.Option(
        metavar="MODE", rich_help_panel=TRAINING,
        help="auto, default, mirrored or multi-worker: how the pretext is distributed (one "
             "device; this machine's GPUs; the machines of TF_CONFIG). auto picks mirrored "
             "with several GPUs, multi-worker when TF_CONFIG names a cluster.")]
        = StrategyName.auto,
    cpu_replicas: Annotated[int | None, typer.Option(
        metavar="N", rich_help_panel=TRAINING, show_default=False,
        help="Without GPUs: split the CPU into N logical devices for --strategy mirrored "
             "(to try distributed training; not faster).")] = None,
    cache_dir: Annotated[Path | None, typer.Option(
        metavar="DIR", rich_help_panel=DATA, file_okay=False, show_default=False,
        help="Cache decoded pretext images in files here (a fast local disk); default: in "
             "memory when they fit --memory-cache-gb, else in RUN/cache.")] = None,
    memory_cache_gb: Annotated[float, typer.Option(
        metavar="GB", rich_help_panel=DATA,
        help="Most decoded pretext images (GB, per worker) kept in memory; beyond, on disk.")]
        = DEFAULT_MEMORY_CACHE_GB,
    step_memory_gb: Annotated[float, typer.Option(
        metavar="GB", rich_help_panel=TRAINING,
        help="On the CPU, most memory (GB) one pretext step's activations may take; a larger "
             "batch is trained as micro-batches with accumulated gradients (same update "
             "size).")] = DEFAULT_STEP_MEMORY_GB,
    runs_dir: Annotated[Path, typer.Option(
        metavar="DIR", rich_help_panel=OUTPUT, help="Where run directories go.")] = Path("runs"),
    name: Annotated[str | None, typer.Option(
        metavar="NAME", rich_help_panel=OUTPUT, show_default=False,
        help="Run name; default: a UTC timestamp.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=OUTPUT, help="Replace an existing run of that name.")]
        = False,
    resume: Annotated[Path | None, typer.Option(
        metavar="RUN", rich_help_panel=OUTPUT, show_default=False,
        help="Continue an interrupted run from its last completed epoch.")] = None,
    tensorboard: Annotated[bool, typer.Option(
        "--tensorboard", rich_help_panel=OUTPUT,
        help="Also log every stage for TensorBoard, in RUN/tensorboard/.")] = False,
    verbose: shared.Verbose = False,
) -> None:
    """Pretrain MobileNetV2 by rotation prediction, then fine-tune it into a classifier."""
    from edge_ssl.quiet import import_tensorflow

    if resume is not None:
        given = [p.opts[0] for p in ctx.command.params if p.name not in ("resume", "verbose")
                 and p.name is not None and _given_on_command_line(ctx, p.name)]
        if given:
            raise RunDirError(f"--resume continues with the run's saved options; drop "
                              f"{', '.join(given)}.")
    else:
        config = TrainConfig(
            data=data, unlabeled=unlabeled, classes=split_classes(classes),
            pretext_classes=pretext_classes, labels_per_class=labels_per_class,
            demo_per_class=demo_per_class, image_size=image_size, width=width,
            backbone_weights=backbone_weights, bn_momentum=bn_momentum,
            rotations=rotations, pretext_lr=pretext_lr, batch_size=batch_size,
            pretext_epochs=pretext_epochs, finetune_epochs=finetune_epochs,
            head_epochs=head_epochs, finetune_batchnorm=finetune_batchnorm,
            learning_rate=learning_rate, patience=patience,
            lr_patience=lr_patience, freeze=freeze, schedule=schedule,
            selection_fraction=selection_fraction, cut=cut,
            pretext_top=pretext_top(pretext_depth, cut), baseline=baseline, seed=seed,
            mixed_precision=mixed_precision, strategy=strategy, cpu_replicas=cpu_replicas,
            cache_dir=cache_dir, memory_cache_gb=memory_cache_gb,
            step_memory_gb=step_memory_gb, tensorboard=tensorboard)
    from edge_ssl.rundir import create_run_dir, new_run_name, point_latest, resolve_run
    from edge_ssl.train.sources import Source, load_source

    source: Source | None = None
    if resume is not None:
        run = resolve_run(resume)
        config = load_run_config(run)
    require_tensorboard(config)
    if resume is None:
        source = load_source(config)  # bad data fails before a run directory is created
        run = runs_dir / (name or new_run_name())
    import_tensorflow(verbose)
    from edge_ssl.train.distribute import connect
    from edge_ssl.train.run import train as run_training

    # Before anything else touches TensorFlow: the strategy fixes the devices.
    cluster = connect(config.strategy, config.cpu_replicas)
    console.print(f"Strategy: {cluster.name.value}, {cluster.replicas} replica"
                  f"{'s' if cluster.replicas > 1 else ''}"
                  + (f" over {cluster.workers} workers, this is {cluster.task}"
                     if cluster.workers > 1 else "")
                  + f" ({', '.join(cluster.devices)})")
    if cluster.is_chief:
        if resume is not None:
            point_latest(run)
            console.print(f"Resuming {run}")
        else:
            run = create_run_dir(runs_dir, run.name, overwrite)
            console.print(f"Run directory: {run}")
    report = run_training(config, run, source=source, resume=resume is not None,
                          cluster=cluster)
    if cluster.is_chief:
        print_summary(run, report)


def _given_on_command_line(ctx: typer.Context, param: str) -> bool:
    # Compared by name: typer vendors its own copy of click's ParameterSource enum.
    source = ctx.get_parameter_source(param)
    return source is not None and source.name == "COMMANDLINE"


def print_summary(run: Path, report: dict[str, Any]) -> None:
    from rich.table import Table

    protocol = report.get("protocol", {})
    table = Table(title=f"edge-ssl train — {run}")
    table.add_column("stage / method")
    table.add_column("accuracy [95 % CI]", justify="right")
    table.add_column("n", justify="right")
    table.add_column("epochs", justify="right")
    table.add_column("images/s", justify="right")
    rows: list[tuple[str, dict[str, Any]]] = []
    if "heldout_rotation" in report.get("pretext", {}):
        rows.append(("pretext: held-out rotation", report["pretext"]))
    rows += [(result["title"], result) for result in report.get("methods", {}).values()]
    for title, result in rows:
        accuracy = result.get("test") or result["heldout_rotation"]
        low, high = accuracy["ci95"]
        cell = f"{accuracy['percent']:.1f}% [{low:.1f}–{high:.1f}]"
        if result.get("collapsed"):
            cell = f"did not learn ({cell})"
        table.add_row(title, cell, str(accuracy["n"]), str(result.get("epochs_run", "")),
                      f"{result['images_per_second']:.0f}" if "images_per_second" in result
                      else "")
    console.print(table)
    if protocol:
        console.print(f"Test images: {protocol['test_set']}; fine-tune schedule: "
                      f"{protocol['schedule']}, cut at {protocol['cut']}.")
    console.print(f"Artifacts in {run}; next: edge-ssl export {run}")
