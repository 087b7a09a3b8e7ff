"""Options that belong to no stage's config but to several commands: one definition each.

Options that set a config field are declared on the field (edge_ssl/options.py); these say where
a command writes and what it shows. Each is an `Annotated` type a command uses as
`runs_dir: RunsDir = Path("runs")`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from edge_ssl.options import OUTPUT

RunsDir = Annotated[Path, typer.Option(
    metavar="DIR", rich_help_panel=OUTPUT, help="Where run directories go.")]
RunName = Annotated[str | None, typer.Option(
    metavar="NAME", rich_help_panel=OUTPUT, show_default=False,
    help="The new run's name; default: a UTC timestamp.")]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", rich_help_panel=OUTPUT, help="Replace an existing run of that name.")]
Progress = Annotated[bool | None, typer.Option(
    "--progress/--no-progress", rich_help_panel=OUTPUT, show_default=False,
    help="Draw a progress bar on the terminal (default: for 256 files or more). Never when "
         "piped.")]
Verbose = Annotated[bool, typer.Option(
    "--verbose", rich_help_panel=OUTPUT, help="Show TensorFlow's own log lines.")]
