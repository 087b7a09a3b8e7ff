"""`edge-ssl finetune RUN`: a new classifier from an existing run's pretext, without redoing it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer

from edge_ssl.commands.config_options import config_options
from edge_ssl.commands.render_training import print_run
from edge_ssl.commands.shared_options import Overwrite, RunName, RunsDir, Verbose
from edge_ssl.console import console, user_errors
from edge_ssl.options import option_names
from edge_ssl.train.config import StrategyName, TrainConfig, load_run_config, require_tensorboard
from edge_ssl.train.finetune_options import FinetuneOptions


# Every fine-tune option, and the TrainConfig options that choose the labelled task.
@user_errors
@config_options(TrainConfig, [
    "classes", "data", "labels_per_class", *option_names(FinetuneOptions), "freeze", "baseline",
    "rotation_loss", "seed", "tensorboard"],
    helps={"data": "Labelled data; default: the pretext run's --data."})
def finetune(
    options: dict[str, Any],
    run: Annotated[Path, typer.Argument(
        metavar="RUN", help="Run whose pretext.keras to start from.", show_default=False)],
    runs_dir: RunsDir = Path("runs"),
    name: RunName = None,
    overwrite: Overwrite = False,
    verbose: Verbose = False,
) -> None:
    """Fine-tune an existing run's rotation-pretrained backbone on other classes or labels.

    Writes a new run directory (pretext.keras copied, classifier.keras trained) that
    `edge-ssl export` takes like any other; the pretext run is left untouched. Trains on one
    device, as every fine-tune does, whatever strategy trained the pretext.
    """
    from edge_ssl.contract import PRETEXT_MODEL
    from edge_ssl.errors import RunDirError
    from edge_ssl.rundir import create_run_dir, new_run_name, resolve_run
    from edge_ssl.start_tensorflow import start_tensorflow
    from edge_ssl.train.sources import load_source

    pretext_run = resolve_run(run)
    if not (pretext_run / PRETEXT_MODEL).is_file():
        raise RunDirError(f"{pretext_run / PRETEXT_MODEL} is missing: the pretext of that run "
                          f"has not finished; continue it with `edge-ssl train --resume {run}`.")
    earlier = load_run_config(pretext_run)
    # Every fine-tune trains on one device, whatever trained the pretext.
    config = replace(earlier, **{**options, "data": options["data"] or earlier.data},
                     pretext_from=pretext_run, strategy=StrategyName.default,
                     cpu_replicas=None, cache_dir=None)
    require_tensorboard(config)
    source = load_source(config)  # bad data fails before a run directory is created
    new_run = create_run_dir(runs_dir, name or new_run_name(), overwrite)
    console.print(f"Run directory: {new_run} (pretext from {pretext_run})")
    start_tensorflow(verbose)
    from edge_ssl.train.run import train as run_training

    report = run_training(config, new_run, source=source)
    print_run(new_run, report)
