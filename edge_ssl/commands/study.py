"""`edge-ssl study RUN`: does the pretext save labels? Every method over label budgets and seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

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
    Schedule,
    load_run_config,
    require_within_pretext,
)
from edge_ssl.train.layers import DEFAULT_CUT
from edge_ssl.train.method_names import (
    COLOUR,
    METHODS,
    RANDOM_PROBE,
    SCRATCH,
    SCRATCH_SHALLOW,
    SSL_FINETUNE,
    TITLES,
)
from edge_ssl.train.study import DEFAULT_BUDGETS


@user_errors
def study(
    run: Annotated[Path, typer.Argument(
        metavar="RUN", show_default=False,
        help="Run whose pretext.keras every SSL method starts from.")],
    classes: Annotated[str | None, typer.Option(
        metavar="A,B", rich_help_panel=DATA, show_default=False,
        help="Classes of the task, comma-separated; default: the data's default classes.")]
        = None,
    data: Annotated[Path | None, typer.Option(
        metavar="DIR", rich_help_panel=DATA, show_default=False,
        help="Labelled data; default: the pretext run's --data.")] = None,
    budgets: Annotated[str, typer.Option(
        metavar="N,N", rich_help_panel=DATA,
        help="Labelled images per class, comma-separated; 'all' for every one.")]
        = ",".join(map(str, DEFAULT_BUDGETS)),
    seeds: Annotated[int, typer.Option(
        metavar="N", rich_help_panel=TRAINING,
        help="Seeds per budget (label samples, inits).")] = 3,
    methods: Annotated[str, typer.Option(
        metavar="A,B", rich_help_panel=TRAINING, show_default=False,
        help=f"Methods to run, comma-separated; default: all of {', '.join(METHODS)}.")]
        = ",".join(METHODS),
    schedule: shared.FinetuneSchedule = Schedule.fixed,
    selection_fraction: shared.SelectionFraction = DEFAULT_SELECTION_FRACTION,
    cut: shared.Cut = DEFAULT_CUT,
    finetune_epochs: shared.FinetuneEpochs = DEFAULT_FINETUNE_EPOCHS,
    head_epochs: shared.HeadEpochs = DEFAULT_HEAD_EPOCHS,
    finetune_batchnorm: shared.FinetuneBatchNormOption = FinetuneBatchNorm.frozen,
    learning_rate: shared.LearningRate = DEFAULT_LEARNING_RATE,
    name: Annotated[str | None, typer.Option(
        metavar="NAME", rich_help_panel=OUTPUT, show_default=False,
        help="Study folder name under RUN/studies; default: the classes.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=OUTPUT, help="Replace a study of that name.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", rich_help_panel=OUTPUT,
        help="Continue an interrupted study of that name with its saved options.")] = False,
    verbose: shared.Verbose = False,
) -> None:
    """For each budget and seed: SSL fine-tune, SSL linear probe, from scratch (the same network,
    and a shallow one cut at block_2_add), random-init probe and colour histogram on the same
    labels and test images; writes study.json and label_efficiency.png under RUN/studies/NAME/."""
    from edge_ssl.commands.train import split_classes
    from edge_ssl.contract import PRETEXT_MODEL
    from edge_ssl.errors import RunDirError
    from edge_ssl.quiet import import_tensorflow
    from edge_ssl.rundir import resolve_run
    from edge_ssl.train.study import (
        STUDY_FILE,
        STUDY_PNG,
        StudyConfig,
        parse_budget,
        prepare,
        run_study,
        study_dir,
    )

    pretext_run = resolve_run(run)
    if not (pretext_run / PRETEXT_MODEL).is_file():
        raise RunDirError(f"{pretext_run / PRETEXT_MODEL} is missing: finish that run first "
                          f"(`edge-ssl train --resume {run}`).")
    require_within_pretext(cut, load_run_config(pretext_run).pretext_top)
    chosen = split_classes(classes)
    config = StudyConfig(
        run=pretext_run, data=data, classes=chosen,
        budgets=tuple(parse_budget(b) for b in budgets.split(",") if b.strip()),
        seeds=seeds, methods=tuple(m.strip() for m in methods.split(",") if m.strip()),
        schedule=schedule, selection_fraction=selection_fraction, cut=cut,
        finetune_epochs=finetune_epochs, head_epochs=head_epochs,
        finetune_batchnorm=finetune_batchnorm,
        learning_rate=learning_rate)
    out = study_dir(pretext_run, name or ("-".join(chosen) if chosen else "default"))
    config = prepare(config, out, overwrite=overwrite, resume=resume)
    console.print(f"Study folder: {out}")
    import_tensorflow(verbose)
    result = run_study(config, out, log=console.print)
    _print_table(result)
    console.print(f"Wrote {out / STUDY_FILE} and {out / STUDY_PNG}")


# The baselines' names where a table cell has room for one word.
SHORT_TITLES = {SCRATCH: "scratch", SCRATCH_SHALLOW: "shallow", RANDOM_PROBE: "random",
                COLOUR: "colour"}


def _print_table(result: dict[str, Any]) -> None:
    from rich.table import Table

    summary = result["summary"]
    budgets = list(next(iter(summary.values())).keys())
    table = Table(title=f"{' vs '.join(result['labels'])}: test accuracy %, mean ± s.d. over "
                        f"seeds (n = {result['test_images']} test images each)")
    table.add_column("method")
    for budget in budgets:
        table.add_column(f"{budget}/class", justify="right")
    for method, rows in summary.items():
        cells = []
        for budget in budgets:
            row = rows[budget]
            text = "—" if row["mean"] is None else f"{row['mean']:.1f}"
            if row["std"] is not None:
                text += f" ± {row['std']:.1f}"
            if row["collapsed"]:
                text += f" ({row['collapsed']} did not learn)"
            cells.append(text)
        table.add_row(TITLES[method], *cells)
    marks = {"above": " ▲", "below": " ▼", "within the intervals": ""}
    for method, rows in result.get("margins", {}).items():
        table.add_row(f"{TITLES[method]} − best baseline", *(
            f"{rows[b]['points']:+.1f}{marks[rows[b]['verdict']]} "
            f"({SHORT_TITLES[rows[b]['best_baseline']]})" if b in rows else "—"
            for b in budgets), style="bold" if method == SSL_FINETUNE else None)
    if result.get("margins"):
        table.caption = ("− best baseline: points above (+) or below (−) the baseline with the "
                         "highest mean; ▲ ▼ where their pooled 95 % intervals do not overlap.")
    console.print(table)
