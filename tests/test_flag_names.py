"""Every `--flag` that a message, docstring or help text names is an option the CLI really has."""

from __future__ import annotations

import ast
import dataclasses
import inspect
import re
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer

from edge_ssl import options as option_declarations
from edge_ssl.cli import app
from edge_ssl.export.config import ExportConfig
from edge_ssl.train.config import TrainConfig
from edge_ssl.train.study import StudyConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge_ssl", "train", "export", "runtime")
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
# Config classes whose validation spells the flag from a field name, and the command they serve.
FROM_FIELD_NAMES = {TrainConfig: "train", StudyConfig: "study"}


def options(command: str | None = None) -> set[str]:
    """The options of `edge-ssl COMMAND`, or of every command."""
    chosen = [COMMANDS[command]] if command else COMMANDS.values()
    return {"--help"} | {name for cmd in chosen for param in cmd.params
                         for name in (*param.opts, *param.secondary_opts)
                         if param.param_type_name == "option"}


def sources() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((ROOT / package).rglob("*.py"))


def strings(tree: ast.AST) -> Iterator[ast.Constant]:
    """Every string literal, including the literal parts of f-strings."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node


def test_every_flag_named_in_the_source_exists() -> None:
    known = options()
    unknown = [f"{path.relative_to(ROOT)}:{node.lineno}: {flag}"
               for path in sources() for node in strings(ast.parse(path.read_text()))
               for flag in FLAG.findall(node.value) if flag not in known]
    assert not unknown, "messages name flags that no command has:\n" + "\n".join(unknown)


def _builds_flags(node: ast.AST) -> bool:
    """An f-string `f"--{name}"` or a sum `"--" + name`: a flag the scan above cannot read."""
    if isinstance(node, ast.JoinedStr):
        return any(isinstance(part, ast.Constant) and str(part.value).endswith("--")
                   and isinstance(after, ast.FormattedValue)
                   for part, after in zip(node.values, node.values[1:], strict=False))
    return (isinstance(node, ast.BinOp) and isinstance(node.left, ast.Constant)
            and str(node.left.value).endswith("--"))


def test_flags_are_spelled_out_except_in_the_config_checks() -> None:
    # edge_ssl/options.py spells a field's flag for the CLI and for the configs' messages alike.
    allowed = {inspect.getsourcefile(cls) for cls in FROM_FIELD_NAMES} | {
        inspect.getsourcefile(option_declarations)}
    built = [f"{path.relative_to(ROOT)}:{node.lineno}" for path in sources()
             if str(path) not in allowed
             for node in ast.walk(ast.parse(path.read_text())) if _builds_flags(node)]
    assert not built, f"flags built at run time, unchecked: {built}"


@pytest.mark.parametrize("config", list(FROM_FIELD_NAMES), ids=lambda c: c.__name__)
def test_config_checks_name_options_of_their_command(config: type) -> None:
    fields = {field.name.replace("_", "-") for field in dataclasses.fields(config)}
    tree = ast.parse(textwrap.dedent(inspect.getsource(config.__post_init__)))  # type: ignore[attr-defined]
    named = {node.value.replace("_", "-") for node in strings(tree)} & fields
    assert named, "the check names no field: is this still how the messages are built?"
    command = FROM_FIELD_NAMES[config]
    missing = sorted(f"--{name}" for name in named if f"--{name}" not in options(command))
    assert not missing, f"{config.__name__} names flags that `edge-ssl {command}` lacks"


def test_export_config_names_export_flags_or_its_own_fields() -> None:
    with pytest.raises(ValueError, match=r"^--max-fp32-nodes -1 is not allowed"):
        ExportConfig(Path("run"), max_fp32_nodes=-1)
    with pytest.raises(ValueError, match=r"^ExportConfig.verify_sizes \(0, 5\) is not allowed"):
        ExportConfig(Path("run"), verify_sizes=((0, 5),))


def _commands_in(text: str) -> Iterator[tuple[str, str]]:
    """(command, what follows it) for every `edge-ssl COMMAND ...` in code spans and blocks."""
    code = re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL)
    code += re.findall(r"(?<!`)`([^`]+)`(?!`)", re.sub(r"```.*?```", "", text, flags=re.DOTALL))
    for chunk in code:
        for line in chunk.split("\n\n"):
            for match in re.finditer(r"edge-ssl ([a-z-]+)(.*?)(?=edge-ssl |$)", line, re.DOTALL):
                yield match.group(1), match.group(2).split("#")[0]


@pytest.mark.parametrize("doc", ["README.md", "docs/architecture.md", "docs/benchmarks.md",
                                 "benchmarks/README.md"])
def test_docs_name_options_of_the_command_they_show(doc: str) -> None:
    shown = list(_commands_in((ROOT / doc).read_text()))
    wrong = [f"edge-ssl {command} {flag}" for command, rest in shown if command in COMMANDS
             for flag in FLAG.findall(rest) if flag not in options(command)]
    assert not wrong, f"{doc} shows options those commands do not have: {wrong}"
    if doc == "README.md":
        assert {command for command, _ in shown} >= set(COMMANDS)  # every command appears
