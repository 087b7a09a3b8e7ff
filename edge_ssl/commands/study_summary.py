"""`edge-ssl study-summary STUDY...`: the mean margin over several pairs, with its interval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge_ssl.console import console, user_errors
from edge_ssl.options import OUTPUT

SUMMARY_DIR = "summary"


@user_errors
def study_summary(
    studies: Annotated[list[Path], typer.Argument(
        metavar="STUDY...", show_default=False,
        help="Folders of finished studies, one per pair of classes (RUN/studies/NAME).")],
    out: Annotated[Path | None, typer.Option(
        "--out", metavar="DIR", rich_help_panel=OUTPUT, show_default=False,
        help="Where summary.json and margins.png go; default: RUN/summary of the first "
             "study.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=OUTPUT, help="Replace an earlier summary there.")] = False,
) -> None:
    """Each self-supervised method's margin over the best label-only baseline on every pair,
    and the mean over the pairs with a paired 95 % interval (seeds and test images of every pair
    resampled together); writes summary.json and margins.png."""
    import shutil

    from edge_ssl.atomic import write_json
    from edge_ssl.commands.render_training import print_summary
    from edge_ssl.errors import ConfigError, RunDirError
    from edge_ssl.train import plots
    from edge_ssl.train.method_names import TITLES
    from edge_ssl.train.study_summary import (
        SUMMARY_FILE,
        SUMMARY_PNG,
        load_studies,
        summarise_pairs,
    )

    if len(studies) < 2:
        raise ConfigError("a summary needs the studies of two or more pairs of classes; run "
                          "`edge-ssl study RUN --classes A,B` for each pair first.")
    loaded = load_studies(studies)
    out = out or studies[0].resolve().parent.parent / SUMMARY_DIR
    if out.exists():
        if not overwrite:
            raise RunDirError(f"{out} already exists; pass --overwrite to replace it or --out "
                              "to write elsewhere.")
        shutil.rmtree(out)
    summary = summarise_pairs(loaded)
    if not summary["margins"]:
        raise RunDirError("these studies share no budget at which every pair has a paired "
                          "margin; run them with the same --budgets and --methods.")
    out.mkdir(parents=True)
    write_json(out / SUMMARY_FILE, summary)
    plots.save_pair_margins(summary, TITLES, out / SUMMARY_PNG)
    print_summary(summary)
    console.print(f"Wrote {out / SUMMARY_FILE} and {out / SUMMARY_PNG}")
