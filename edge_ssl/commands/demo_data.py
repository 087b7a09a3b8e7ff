"""`edge-ssl demo-data DIR`: the built-in duck/fish set on disk, to look at, train on, classify."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Annotated

import typer

from edge_ssl.console import console, user_errors


@user_errors
def demo_data(
    directory: Annotated[Path, typer.Argument(
        metavar="DIR", help="Empty folder to write DIR/duck, DIR/fish and DIR/unlabeled into.")],
    per_class: Annotated[int, typer.Option(
        "--per-class", min=1, metavar="N", help="Labelled images per class.")] = 500,
    unlabeled: Annotated[int, typer.Option(
        "--unlabeled", min=0, metavar="N",
        help="Extra unlabeled images for the rotation pretext.")] = 500,
    seed: Annotated[int, typer.Option(
        "--seed", min=0, metavar="N", help="Same seed, same images.")] = 0,
    image_size: Annotated[int, typer.Option(
        "--image-size", min=16, metavar="N", help="Side of the square images, in pixels.")] = 64,
    overwrite: Annotated[bool, typer.Option(
        "--overwrite", help="Write into a non-empty folder, replacing earlier demo images.")
    ] = False,
) -> None:
    """Write the built-in procedural duck/fish dataset as a class-per-folder tree of PNGs."""
    # Imported here so that `edge-ssl --help` does not pay for numpy and Pillow.
    from edge_ssl.train.demo_data import write

    counts = write(directory, per_class, seed, image_size=image_size, unlabeled=unlabeled,
                   overwrite=overwrite)
    width = max(len(str(directory / name)) for name in counts)
    lines = [f"Wrote {sum(counts.values()):,} demo images to {directory}"]
    lines += [f"  {str(directory / name):<{width}}  {count:>7,}" for name, count in counts.items()]
    train = f"edge-ssl train --data {shlex.quote(str(directory))}"
    if "unlabeled" in counts:
        train += f" --unlabeled {shlex.quote(str(directory / 'unlabeled'))}"
    lines += ["Next:", f"  {train}", f"  edge-ssl classify {shlex.quote(str(directory / 'duck'))}"]
    # No markup (a path may hold brackets) and no wrapping (the commands are meant to be copied).
    console.print("\n".join(lines), markup=False, soft_wrap=True)
