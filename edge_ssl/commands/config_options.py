"""A command's options, built from the config fields that declare them (edge_ssl/options.py).

`@config_options(TrainConfig, [...])` gives the decorated command one typer parameter per named
field — flag, type, default, help, metavar and panel all read from the field — and calls it with
`options`, a dict of the parsed values keyed by field name, ready for `TrainConfig(**options)`
or `dataclasses.replace(config, **options)`. The command's own parameters (those that belong to
no config: `--runs-dir`, `--verbose`) follow, declared as usual.

Typer reads a command's parameters from `inspect.signature`, so the wrapper publishes the
combined signature as `__signature__` (PEP 362) with real annotations: no typer internals.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from edge_ssl.errors import ConfigError
from edge_ssl.options import OUTPUT, PANELS, Option, flag, option_names, option_of

OPTIONS = "options"  # the decorated command's parameter that receives the values


def config_options(config: type, names: Sequence[str] | None = None, *,
                   defaults: dict[str, Any] | None = None, flags: dict[str, str] | None = None,
                   helps: dict[str, str] | None = None
                   ) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command with the options of `config`'s fields `names` (default: every field
    that declares one), arguments first, then each help panel's options together.

    `defaults`, `flags` and `helps` change a field's default, spelling or help for this command
    only (the demo trains with fewer epochs than `train`). A value that a field's `parse`
    refuses is a usage error, reported like typer's own.
    """
    hints = typing.get_type_hints(config)
    fields = {f.name: f for f in dataclasses.fields(config)}
    names = list(option_names(config) if names is None else names)

    def decorate(command: Callable[..., Any]) -> Callable[..., Any]:
        own = inspect.signature(command)
        own_hints = typing.get_type_hints(command, include_extras=True)
        parsers: dict[str, Callable[[Any], Any]] = {}
        generated = []
        for name in names:
            field = fields[name]
            declared = option_of(field)
            if declared is None:
                raise TypeError(f"{config.__name__}.{name} declares no command-line option")
            default = (defaults or {}).get(name, field.default)
            declared = dataclasses.replace(declared, help=(helps or {}).get(name, declared.help))
            spelled = (flags or {}).get(name, flag(name))
            annotation, cli_default, parse = _typer_parameter(hints[name], default, declared,
                                                              spelled)
            parsers[name] = _as_usage_error(parse, spelled)
            generated.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY,
                                               default=cli_default, annotation=annotation))
        generated.sort(key=_place)
        rest = [p.replace(annotation=own_hints.get(p.name, p.annotation),
                          kind=inspect.Parameter.KEYWORD_ONLY)
                for p in own.parameters.values() if p.name != OPTIONS]

        @functools.wraps(command)
        def wrapper(**given: Any) -> Any:
            values = {name: parsers[name](given.pop(name)) for name in names}
            return command(**given, **{OPTIONS: values})

        signature = own.replace(parameters=[*generated, *rest])
        wrapper.__signature__ = signature  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in signature.parameters.values()}
        return wrapper

    return decorate


def _place(parameter: inspect.Parameter) -> float:
    """Arguments first, then the panels in PANELS order, a command's own panels just before
    Output (a stable sort keeps the fields' order within a panel)."""
    info = typing.get_args(parameter.annotation)[1]
    panel = getattr(info, "rich_help_panel", None)
    if isinstance(info, typer.models.ArgumentInfo):
        return -1
    return PANELS.index(panel) if panel in PANELS else PANELS.index(OUTPUT) - 0.5


def _as_usage_error(parse: Callable[[Any], Any], spelled: str) -> Callable[[Any], Any]:
    def checked(value: Any) -> Any:
        try:
            return parse(value)
        except ConfigError as exc:
            raise typer.BadParameter(str(exc), param_hint=spelled) from None

    return checked


def _typer_parameter(hint: Any, default: Any, declared: Option, spelled: str
                     ) -> tuple[Any, Any, Callable[[Any], Any]]:
    """(annotation, default, command line value → field value) of one generated parameter."""
    kind, parse = _cli_type(hint, default, declared)
    cli_default: Any
    if default is dataclasses.MISSING:
        cli_default = inspect.Parameter.empty
    elif declared.parse is not None and default is not None and default != ():
        cli_default = (declared.text or str)(default)
    elif declared.parse is not None:
        cli_default = None
    else:
        cli_default = list(default) if isinstance(default, tuple) else default
    settings: dict[str, Any] = {"help": declared.help, "show_default": declared.show_default}
    if declared.argument:
        settings["metavar"] = declared.metavar
        info: Any = typer.Argument(**settings)
    else:
        decls = [spelled]
        if declared.short:
            decls.append(declared.short)
        if declared.metavar:
            settings["metavar"] = declared.metavar
        if declared.panel:
            settings["rich_help_panel"] = declared.panel
        if declared.minimum is not None:
            settings["min"] = declared.minimum
        if declared.must_exist:
            settings.update(exists=True, dir_okay=False)
        if isinstance(default, enum.Enum):
            settings["case_sensitive"] = False
        info = typer.Option(*decls, **settings)
    return Annotated[kind, info], cli_default, parse


def _cli_type(hint: Any, default: Any, declared: Option) -> tuple[Any, Callable[[Any], Any]]:
    """The type typer parses, and how its value becomes the field's."""
    optional = type(None) in typing.get_args(hint)
    if declared.parse is not None:
        parse = declared.parse

        def from_text(text: str | None) -> Any:
            return default if text is None else parse(text)

        return (str | None if optional or default in (None, ()) else str), from_text
    if typing.get_origin(hint) is tuple:  # tuple[Path, ...] ← one argument given many times
        (item, _) = typing.get_args(hint)
        return list[item], lambda values: tuple(values or ())  # type: ignore[valid-type]
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        (kind,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return (kind | None), _same
    return hint, _same


def _same(value: Any) -> Any:
    return value
