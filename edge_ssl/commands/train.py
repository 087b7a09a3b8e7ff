"""`edge-ssl train`: rotation pretext, then fine-tune, into a resumable run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edge_ssl.commands.config_options import config_options
from edge_ssl.commands.render_training import print_run
from edge_ssl.commands.shared_options import Overwrite, RunName, RunsDir, Verbose
from edge_ssl.console import console, user_errors
from edge_ssl.errors import RunDirError
from edge_ssl.options import MODEL, OUTPUT, flag
from edge_ssl.train.config import (
    PretextDepth,
    TrainConfig,
    load_run_config,
    pretext_top,
    require_tensorboard,
)


@user_errors
@config_options(TrainConfig)
def train(
    options: dict[str, Any],
    ctx: typer.Context,
    pretext_depth: Annotated[PretextDepth, typer.Option(
        metavar="cut|full", rich_help_panel=MODEL,
        help="cut: the pretext trains MobileNetV2 up to --cut, the part the classifier keeps "
             "(faster epochs, better features per CPU-minute); full: the whole network, which "
             "lets `edge-ssl finetune` cut it anywhere.")] = PretextDepth.cut,
    runs_dir: RunsDir = Path("runs"),
    name: RunName = None,
    overwrite: Overwrite = False,
    resume: Annotated[Path | None, typer.Option(
        metavar="RUN", rich_help_panel=OUTPUT, show_default=False,
        help="Continue an interrupted run from its last completed epoch.")] = None,
    verbose: Verbose = False,
) -> None:
    """Pretrain MobileNetV2 by rotation prediction, then fine-tune it into a classifier."""
    from edge_ssl.start_tensorflow import start_tensorflow

    if resume is not None:
        given = [p.opts[0] for p in ctx.command.params if p.name not in ("resume", "verbose")
                 and p.name is not None and _given_on_command_line(ctx, p.name)]
        if given:
            raise RunDirError(f"--resume continues with the run's saved options; drop "
                              f"{', '.join(given)}.")
    elif options["pretext_init"] is not None:
        config = _from_pretext_init(options, ctx)
    else:
        config = TrainConfig(**options, pretext_top=pretext_top(pretext_depth, options["cut"]))
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
    start_tensorflow(verbose)
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
        print_run(run, report)


def _from_pretext_init(options: dict[str, Any], ctx: typer.Context) -> TrainConfig:
    """The run's config when its pretext starts from another run's (or the built-in) rotation
    model: that network's width, image size and depth, and with --pretext-epochs 0 that model
    as it is (`pretext_from`)."""
    from edge_ssl.contract import PRETEXT_MODEL
    from edge_ssl.errors import ConfigError
    from edge_ssl.rundir import resolve_run

    given = options["pretext_init"]
    init = resolve_run(given)
    if not (init / PRETEXT_MODEL).is_file():
        raise RunDirError(f"{init / PRETEXT_MODEL} is missing: finish that run first "
                          f"(`edge-ssl train --resume {given}`).")
    earlier = load_run_config(init)
    if earlier.backbone_weights is not None:
        raise ConfigError(f"--pretext-init {given}: that run started from ImageNet weights; "
                          f"fine-tune it with `edge-ssl finetune {given}` instead.")
    kept = {"width": earlier.width, "image_size": earlier.image_size,
            "bn_momentum": earlier.bn_momentum, "backbone_weights": None}
    conflicts = [f"{flag(name)} {options[name]}" for name in kept
                 if _given_on_command_line(ctx, name) and options[name] != kept[name]]
    if _given_on_command_line(ctx, "pretext_depth"):
        conflicts.append("--pretext-depth")
    if conflicts:
        raise ConfigError(f"--pretext-init {given} keeps that network's width "
                          f"{earlier.width}, image size {earlier.image_size} and depth; drop "
                          f"{', '.join(conflicts)}.")
    return TrainConfig(**{**options, **kept, "pretext_init": init},
                       pretext_top=earlier.pretext_top,
                       pretext_from=init if options["pretext_epochs"] == 0 else None)


def _given_on_command_line(ctx: typer.Context, param: str) -> bool:
    # Compared by name: typer vendors its own copy of click's ParameterSource enum.
    source = ctx.get_parameter_source(param)
    return source is not None and source.name == "COMMANDLINE"
