"""`edge-ssl study RUN`: does the pretext save labels? Every method over label budgets and seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from edge_ssl.commands.config_options import config_options
from edge_ssl.commands.render_training import print_study
from edge_ssl.commands.shared_options import Verbose
from edge_ssl.console import console, user_errors
from edge_ssl.options import OUTPUT
from edge_ssl.train.config import load_run_config
from edge_ssl.train.cuts import require_within_pretext
from edge_ssl.train.study import StudyConfig


@user_errors
@config_options(StudyConfig)
def study(
    options: dict[str, Any],
    name: Annotated[str | None, typer.Option(
        metavar="NAME", rich_help_panel=OUTPUT, show_default=False,
        help="Study folder name under RUN/studies; default: the classes.")] = None,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", rich_help_panel=OUTPUT, help="Replace a study of that name.")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", rich_help_panel=OUTPUT,
        help="Continue an interrupted study of that name with its saved options.")] = False,
    verbose: Verbose = False,
) -> None:
    """For each budget and seed, every method on the same labels and test images: the SSL
    fine-tune with and without the rotation loss, the rotation loss from random init, the SSL
    linear probe, from scratch (the same network, and a shallow one cut at block_2_add), the
    random-init probe, a tiny-image ridge and a colour histogram; writes study.json and
    label_efficiency.png under RUN/studies/NAME/."""
    from edge_ssl.contract import PRETEXT_MODEL, RUNS_DIR
    from edge_ssl.errors import RunDirError
    from edge_ssl.rundir import BUILTIN, builtin_dir, resolve_run
    from edge_ssl.start_tensorflow import start_tensorflow
    from edge_ssl.train.study import (
        STUDY_FILE,
        STUDY_PNG,
        prepare,
        run_study,
        study_dir,
    )

    run = options["run"]
    pretext_run = resolve_run(run)
    if not (pretext_run / PRETEXT_MODEL).is_file():
        raise RunDirError(f"{pretext_run / PRETEXT_MODEL} is missing: finish that run first "
                          f"(`edge-ssl train --resume {run}`).")
    config = StudyConfig(**{**options, "run": pretext_run})
    require_within_pretext(config.cut, load_run_config(pretext_run).pretext_top)
    # The built-in pretext is part of the installed package: its studies go under runs/.
    home = Path(RUNS_DIR) / BUILTIN if pretext_run == builtin_dir().resolve() else pretext_run
    out = study_dir(home, name or "-".join(config.classes) or "default")
    config = prepare(config, out, overwrite=overwrite, resume=resume)
    console.print(f"Study folder: {out}")
    start_tensorflow(verbose)
    result = run_study(config, out)
    print_study(result)
    console.print(f"Wrote {out / STUDY_FILE} and {out / STUDY_PNG}")
