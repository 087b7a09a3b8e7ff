"""`edge-ssl finetune RUN`: a new classifier from an existing run's pretext, without redoing it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated

import typer

from edge_ssl.commands import shared_options as shared
from edge_ssl.console import console, user_errors
from edge_ssl.help_format import DATA, OUTPUT, TRAINING
from edge_ssl.train.config import (
    DEFAULT_FINETUNE_EPOCHS,
    DEFAULT_HEAD_EPOCHS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_SELECTION_FRACTION,
    FinetuneBatchNorm,
    Freeze,
    Schedule,
    StrategyName,
    load_run_config,
)
from edge_ssl.train.layers import DEFAULT_CUT


@user_errors
def finetune(
    run: Annotated[Path, typer.Argument(
        metavar="RUN", help="Run whose pretext.keras to start from.", show_default=False)],
    classes: Annotated[str | None, typer.Option(
        metavar="A,B", rich_help_panel=DATA, show_default=False,
        help="Fine-tune classes, comma-separated (wnids, words of words.txt, folder names); "
             "default: the data's default classes.")] = None,
    data: Annotated[Path | None, typer.Option(
        metavar="DIR", rich_help_panel=DATA, show_default=False,
        help="Labelled data; default: the pretext run's --data.")] = None,
    labels_per_class: Annotated[int | None, typer.Option(
        metavar="N", rich_help_panel=DATA,
        help="Keep only N labelled images per class (seeded).")] = None,
    finetune_epochs: shared.FinetuneEpochs = DEFAULT_FINETUNE_EPOCHS,
    head_epochs: shared.HeadEpochs = DEFAULT_HEAD_EPOCHS,
    finetune_batchnorm: shared.FinetuneBatchNormOption = FinetuneBatchNorm.frozen,
    learning_rate: shared.LearningRate = DEFAULT_LEARNING_RATE,
    schedule: shared.FinetuneSchedule = Schedule.auto,
    selection_fraction: shared.SelectionFraction = DEFAULT_SELECTION_FRACTION,
    cut: shared.Cut = DEFAULT_CUT,
    freeze: Annotated[Freeze, typer.Option(
        metavar="none|backbone", rich_help_panel=TRAINING,
        help="backbone: train only the head.")] = Freeze.none,
    baseline: Annotated[bool, typer.Option(
        "--baseline", rich_help_panel=TRAINING,
        help="Also measure the baselines (probes, from scratch, colour histogram).")] = False,
    seed: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=TRAINING,
        help="Seed for label sampling and initialisation.")] = 0,
    runs_dir: Annotated[Path, typer.Option(
        metavar="DIR", rich_help_panel=OUTPUT, help="Where run directories go.")] = Path("runs"),
    name: Annotated[str | None, typer.Option(
        metavar="NAME", rich_help_panel=OUTPUT, show_default=False,
        help="New run's name; default: a UTC timestamp.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=OUTPUT, help="Replace an existing run of that name.")]
        = False,
    tensorboard: Annotated[bool, typer.Option(
        "--tensorboard", rich_help_panel=OUTPUT,
        help="Also log the fine-tune for TensorBoard, in the new run's tensorboard/.")] = False,
    verbose: shared.Verbose = False,
) -> None:
    """Fine-tune an existing run's rotation-pretrained backbone on other classes or labels.

    Writes a new run directory (pretext.keras copied, classifier.keras trained) that
    `edge-ssl export` takes like any other; the pretext run is left untouched. Trains on one
    device, as every fine-tune does, whatever strategy trained the pretext.
    """
    from edge_ssl.commands.train import print_summary, require_tensorboard, split_classes
    from edge_ssl.contract import PRETEXT_MODEL
    from edge_ssl.errors import RunDirError
    from edge_ssl.quiet import import_tensorflow
    from edge_ssl.rundir import create_run_dir, new_run_name, resolve_run
    from edge_ssl.train.sources import load_source

    pretext_run = resolve_run(run)
    if not (pretext_run / PRETEXT_MODEL).is_file():
        raise RunDirError(f"{pretext_run / PRETEXT_MODEL} is missing: the pretext of that run "
                          f"has not finished; continue it with `edge-ssl train --resume {run}`.")
    earlier = load_run_config(pretext_run)
    config = replace(
        earlier, data=data if data is not None else earlier.data,
        classes=split_classes(classes), labels_per_class=labels_per_class,
        finetune_epochs=finetune_epochs, head_epochs=head_epochs,
        finetune_batchnorm=finetune_batchnorm, learning_rate=learning_rate,
        schedule=schedule,
        selection_fraction=selection_fraction, cut=cut, freeze=freeze, baseline=baseline,
        seed=seed, tensorboard=tensorboard, pretext_from=pretext_run,
        strategy=StrategyName.default, cpu_replicas=None, cache_dir=None)
    require_tensorboard(config)
    source = load_source(config)  # bad data fails before a run directory is created
    new_run = create_run_dir(runs_dir, name or new_run_name(), overwrite)
    console.print(f"Run directory: {new_run} (pretext from {pretext_run})")
    import_tensorflow(verbose)
    from edge_ssl.train.run import train as run_training

    report = run_training(config, new_run, source=source)
    print_summary(new_run, report)
