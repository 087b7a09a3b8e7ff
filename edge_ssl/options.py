"""Options declared once: a config field holds an option's name, type, default and help.

Every stage has one frozen config dataclass (TrainConfig, ExportConfig, ClassifyConfig, ...). A
field that is also a command-line option says so with `option(...)`: the option is named after the
field (`image_size` is `--image-size`), has its type and default, and its help, metavar and help
panel ride in the field's metadata. The CLI builds each command's parameters from these fields
(edge_ssl/commands/config_options.py), so a new option is one field plus the code that uses it.
A field without `option(...)` is a setting only Python callers choose.

Standard library only: the configs stay importable without typer, and the runtime starts fast.
"""

from __future__ import annotations

import dataclasses
import enum
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from edge_ssl.errors import ConfigError

METADATA_KEY = "edge_ssl.option"
C = TypeVar("C")

# Panels that group a command's options in its help, shown in the order options first use them.
INPUT = "Input"
DATA = "Data"
MODEL = "Model"
TRAINING = "Training"
RUNTIME = "Runtime"
OUTPUT = "Output"
PANELS = (INPUT, DATA, MODEL, TRAINING, RUNTIME, OUTPUT)


@dataclass(frozen=True)
class Option:
    """How one config field appears on the command line.

    Attributes:
        help: one or two sentences; the default is shown after it.
        metavar: what the value looks like (`N`, `DIR`, `cut|full`); empty for a flag.
        panel: the help panel it is listed in.
        short: a one-letter alias such as `-m`.
        argument: a positional argument instead of an option.
        parse: command-line text → field value, for values typed as one string (`A,B`).
        text: field value → the text `parse` reads, for the default shown in the help.
        minimum: the smallest value the command line accepts.
        must_exist: a path that must exist (and be a file) when given.
        show_default: whether the help shows the default.
    """

    help: str
    metavar: str = ""
    panel: str | None = None
    short: str | None = None
    argument: bool = False
    parse: Callable[[str], Any] | None = None
    text: Callable[[Any], str] | None = None
    minimum: int | None = None
    must_exist: bool = False
    show_default: bool = True


def option(default: Any, help: str, metavar: str = "", panel: str | None = None,
           **how: Any) -> Any:
    """A dataclass field with `default` that is also the command-line option named after it."""
    return dataclasses.field(default=default,
                             metadata={METADATA_KEY: Option(help, metavar, panel, **how)})


def option_of(field: dataclasses.Field[Any]) -> Option | None:
    """The command-line declaration of a config field, or None for a Python-only setting."""
    return field.metadata.get(METADATA_KEY)


def option_names(config: type) -> list[str]:
    """The fields of `config` that are command-line options, in declaration order."""
    return [f.name for f in dataclasses.fields(config)  # type: ignore[arg-type]
            if option_of(f) is not None]


def flag(name: str) -> str:
    """The option a field is set with: `image_size` → `--image-size`."""
    return "--" + name.replace("_", "-")


def with_default(config: type, name: str, default: Any) -> Any:
    """`config`'s field `name` declared again with another default and the same option, for a
    config that shares the option but not its default (a study's fixed schedule)."""
    field = next(f for f in dataclasses.fields(config) if f.name == name)
    return dataclasses.field(default=default, metadata=field.metadata)


def not_allowed(config: object, name: str, value: Any, allowed: str) -> ConfigError:
    """The error for a field outside its range, naming what the user typed.

    A field that is an option is named by its flag (`--batch-size 6 is not allowed: ...`);
    a Python-only setting by its class and field (`ExportConfig.gate_images 0 ...`).
    """
    field = next(f for f in dataclasses.fields(config) if f.name == name)  # type: ignore[arg-type]
    declared = option_of(field)
    if declared is not None and not declared.argument:
        what = flag(name)
    else:
        what = f"{type(config).__name__}.{name}"
    return ConfigError(f"{what} {value} is not allowed: {allowed}.")


def split_commas(text: str) -> tuple[str, ...]:
    """`"a, b,,c"` → `("a", "b", "c")`: how every list option is typed."""
    return tuple(part.strip() for part in text.split(",") if part.strip())


def joined(values: Any) -> str:
    """The text `split_commas` reads back: `("a", "b")` → `"a,b"`."""
    return ",".join(str(value) for value in values)


def to_json(config: object) -> dict[str, Any]:
    """Every field of a config as JSON values: enums by value, paths as text, tuples as lists."""
    return {f.name: _plain(getattr(config, f.name))
            for f in dataclasses.fields(config)}  # type: ignore[arg-type]


def from_json(config: type[C], values: Mapping[str, Any],
              legacy: Mapping[str, Any] | None = None) -> C:
    """The config `to_json` saved, each value converted back to its field's type.

    Keys the class does not know are ignored. `legacy` holds what a file saved before a field
    existed did, for the fields it lacks (a run trained before an option had that option's old
    behaviour, not today's default).
    """
    hints = typing.get_type_hints(config)
    names = {f.name for f in dataclasses.fields(config)}  # type: ignore[arg-type]
    merged = {**(legacy or {}), **{k: v for k, v in values.items() if k in names}}
    return config(**{name: _typed(hints[name], value) for name, value in merged.items()})


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return [_plain(item) for item in value]
    return value


def _typed(hint: Any, value: Any) -> Any:
    if value is None:
        return None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        (hint,) = [a for a in args if a is not type(None)]
        return _typed(hint, value)
    if origin is tuple:
        items = args[:1] * len(value) if args[-1:] == (Ellipsis,) else args
        return tuple(_typed(item, v) for item, v in zip(items, value, strict=True))
    if hint is Path or (isinstance(hint, type) and issubclass(hint, enum.Enum)):
        return hint(value)
    return value
