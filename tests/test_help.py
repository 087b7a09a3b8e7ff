"""Every command's --help reads in 80 columns and in a pipe: each option whole, plain metavars."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
import typer
from typer.testing import CliRunner

from edge_ssl.cli import app

runner = CliRunner()
COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
# Typer's own type names, which the help must not show: <int>, <path>, <list[Path]>, {paths}.
TYPER_TYPES = re.compile(r"<(bool|int|float|str|text|path|file|directory|list\[|\w+ range)|\{\w")


def option_names(name: str) -> list[str]:
    """Every --long, -s and --no-x spelling of every option of `edge-ssl NAME`."""
    return [opt for param in COMMANDS[name].params if param.param_type_name == "option"
            for opt in (*param.opts, *param.secondary_opts)] + ["--help"]


def appears_whole(option: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


@pytest.mark.parametrize("env", [{"COLUMNS": "80"}, {"COLUMNS": None}],
                         ids=["80-columns", "piped"])
@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_help_shows_every_option_whole(name: str, env: dict[str, str | None]) -> None:
    result = runner.invoke(app, [name, "--help"], env=env)
    assert result.exit_code == 0, result.output
    text = result.output
    missing = [option for option in option_names(name) if not appears_whole(option, text)]
    assert not missing, f"edge-ssl {name} --help cuts {missing}:\n{text}"
    assert "…" not in text, text
    assert max(map(len, text.splitlines())) <= 80, text
    assert not TYPER_TYPES.search(text), text
    for param in COMMANDS[name].params:
        if param.param_type_name == "argument":
            assert param.metavar and param.metavar in text  # PATH..., RUN, DIR


def test_grep_finds_every_option_in_a_real_pipe() -> None:
    """`edge-ssl COMMAND --help | grep -- --OPTION` as a user types it, in a fresh process."""
    for name in COMMANDS:
        text = subprocess.run([sys.executable, "-c", "from edge_ssl.cli import main; main()",
                               name, "--help"], capture_output=True, text=True, check=True,
                              env={**os.environ, "COLUMNS": "80"}).stdout
        missing = [option for option in option_names(name) if not appears_whole(option, text)]
        assert not missing, f"edge-ssl {name} --help | grep misses {missing}"


def test_top_level_help_lists_every_command() -> None:
    result = runner.invoke(app, ["--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    for name in COMMANDS:
        assert appears_whole(name, result.output), name
    assert max(map(len, result.output.splitlines())) <= 80
    assert not TYPER_TYPES.search(result.output), result.output
