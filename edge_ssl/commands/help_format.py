"""`--help` that reads in an 80-column terminal and in a pipe: the CLI's one adaptation of typer.

Typer's own help names types the Python way (`<list[Path]>`, `{paths}...`, `<bool>`); the long
ones widen the type column until rich cuts the option names beside it short with an ellipsis,
and then `edge-ssl train --help | grep labels-per-class` finds nothing.
Commands therefore give every valued option a short metavar (`N`, `DIR`, `FILE`), and this class
shows arguments and flags the way Unix help pages do: `PATH...`, `[RUN]`, and a bare `--int8`.
"""

from __future__ import annotations

import inspect
from typing import Any

from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

# Typer types these methods with the Context of the click it vendors privately; the public
# `typer.Context` is a subclass of it, too narrow for an override.
Context = Any


class _Argument(TyperArgument):
    """An argument shown by its metavar alone: the name column already says `PATH...`."""

    def display_type_rich(self, ctx: Context) -> str | None:
        return None

    def get_usage_pieces(self, ctx: Context) -> list[str]:
        name = self.metavar or self.name.upper()  # type: ignore[union-attr]
        return [name if self.required else f"[{name}]"]


class HelpFormat(TyperCommand):
    """A command whose help shows plain metavars, flags without a type, `--help` last."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.help:
            # Typer keeps the docstring's line breaks after its first paragraph; rich then
            # wraps those lines again and leaves stubs. Paragraphs reflow as one line each.
            self.help = "\n\n".join(" ".join(paragraph.split())
                                     for paragraph in inspect.cleandoc(self.help).split("\n\n"))
        for param in self.params:
            if isinstance(param, TyperArgument):
                # Typer builds its parameter objects itself and takes no class for them, so the
                # argument is re-classed here; tests/test_help.py renders every command to check.
                param.__class__ = _Argument
            elif isinstance(param, TyperOption) and param.is_flag:
                param.metavar = ""

    def get_help_option(self, ctx: Context) -> TyperOption | None:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
            panels = [getattr(p, "rich_help_panel", None) for p in self.params
                      if isinstance(p, TyperOption)]
            # With every option in a named panel, --help joins the last one rather than
            # opening an "Options" panel of its own at the top.
            if panels and all(panels):
                option.rich_help_panel = panels[-1]  # type: ignore[attr-defined]
        return option


class HelpFormatGroup(TyperGroup):
    """`edge-ssl --help`, whose own `--help` is shown without a type, as in every command."""

    def get_help_option(self, ctx: Context) -> TyperOption | None:
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option
