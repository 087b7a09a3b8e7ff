"""Each option is declared once, on its config's field, and the CLI is built from that field."""

from __future__ import annotations

import ast
import dataclasses
import logging
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from edge_ssl import progress
from edge_ssl.cli import app
from edge_ssl.commands.render_runtime import progress_bar
from edge_ssl.console import stage_messages, user_errors
from edge_ssl.errors import ConfigError, DataError, ModelError
from edge_ssl.export.config import ExportConfig
from edge_ssl.options import flag, from_json, not_allowed, option_names, option_of, to_json
from edge_ssl.runtime.classify import ClassifyConfig
from edge_ssl.runtime.evaluate import EvaluateConfig
from edge_ssl.runtime.latency import BenchConfig
from edge_ssl.train.config import TrainConfig
from edge_ssl.train.finetune_options import FinetuneOptions, Schedule
from edge_ssl.train.study import StudyConfig

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = typer.main.get_command(app).commands  # type: ignore[attr-defined]
CONFIGS = {"train": TrainConfig, "study": StudyConfig, "export": ExportConfig,
           "classify": ClassifyConfig, "evaluate": EvaluateConfig, "bench": BenchConfig}


def _params(command: str) -> dict[str, Any]:
    return {param.name: param for param in COMMANDS[command].params}


@pytest.mark.parametrize("command", sorted(CONFIGS))
def test_every_declared_option_is_on_its_command_with_the_fields_default(command: str) -> None:
    config, params = CONFIGS[command], _params(command)
    for field in dataclasses.fields(config):
        declared = option_of(field)
        if declared is None:
            assert field.name not in params  # a Python-only setting stays off the command line
            continue
        param = params[field.name]
        if declared.argument:
            assert param.param_type_name == "argument"
            continue
        assert flag(field.name) in param.opts
        assert param.help == declared.help
        if declared.parse is None and field.default is not dataclasses.MISSING:
            expected = list(field.default) if isinstance(field.default, tuple) else field.default
            assert param.default == expected, field.name


def test_a_fine_tune_option_reaches_train_finetune_and_study_from_one_declaration() -> None:
    for name in option_names(FinetuneOptions):
        helps = {_params(command)[name].help for command in ("train", "finetune", "study")}
        assert len(helps) == 1, name
    # The study shares the declaration and changes only the default.
    assert _params("study")["schedule"].default is Schedule.fixed
    assert _params("train")["schedule"].default is Schedule.auto


@pytest.mark.parametrize("config", [
    TrainConfig(classes=("goose", "goldfish"), data=Path("data"), labels_per_class=5),
    StudyConfig(run=Path("runs/r"), budgets=(5, None), classes=("a", "b")),
    ExportConfig(Path("runs/r"), int8=True),
    ClassifyConfig((Path("a.jpg"), Path("b")), top_k=2),
    BenchConfig((Path("m.onnx"),), batch_sizes=(1, 4)),
], ids=lambda c: type(c).__name__)
def test_configs_round_trip_through_json(config: Any) -> None:
    saved = config.to_json() if hasattr(config, "to_json") else to_json(config)
    if isinstance(config, TrainConfig):
        saved = config.to_dict()
        assert TrainConfig.from_dict(saved) == config
    elif isinstance(config, StudyConfig):
        assert StudyConfig.from_json(saved) == config
    else:
        assert from_json(type(config), saved) == config


def test_a_message_names_the_flag_of_an_option_and_the_field_of_a_python_setting() -> None:
    config = ExportConfig(Path("run"))
    assert str(not_allowed(config, "opset", 17, "use 18")) == "--opset 17 is not allowed: use 18."
    assert str(not_allowed(config, "tolerance", 2, "less")).startswith(
        "ExportConfig.tolerance 2 is not allowed")


def test_a_value_its_option_cannot_parse_is_a_usage_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["study", str(tmp_path), "--budgets", "5,x"])
    assert result.exit_code == 2
    assert "--budgets x is not allowed" in " ".join(result.output.replace("│", " ").split())


def test_errors_carry_the_runtime_exit_codes_and_other_commands_exit_1() -> None:
    def failing(error: Exception) -> Any:
        def command() -> None:
            raise error
        return command

    for error, code in ((ConfigError("bad option"), 2), (DataError("no images"), 3),
                        (ModelError("not a model"), 4)):
        with pytest.raises(typer.Exit) as detailed:
            user_errors(detailed=True)(failing(error))()
        assert detailed.value.exit_code == code
        with pytest.raises(typer.Exit) as plain:
            user_errors(failing(error))()
        assert plain.value.exit_code == 1


def test_the_stages_log_lines_reach_the_console(capsys: pytest.CaptureFixture[str]) -> None:
    stage = logging.getLogger("edge_ssl.train.pretext_stage")
    with stage_messages():
        stage.info("Stage 1: rotation pretext")
        stage.warning("skipped broken.jpg: empty file")
        stage.debug("not for people")
    out, err = capsys.readouterr()
    assert "Stage 1: rotation pretext" in out and "not for people" not in out + err
    assert "warning:" in err and "skipped broken.jpg: empty file" in err
    stage.info("after the command")  # nothing is shown once the command is over
    assert "after the command" not in capsys.readouterr().out


def test_counts_the_runtime_logs_move_the_progress_bar() -> None:
    from rich.console import Console

    console = Console(force_terminal=True, record=True, width=80)
    with stage_messages(), progress_bar(console, show=True, what="classifying"):
        progress.report(logging.getLogger("edge_ssl.runtime.classify"), "classified", 7, 9)
    assert "7/9" in console.export_text()


STAGES = ("train", "export", "runtime")
CLI_ONLY = ("edge_ssl.console", "edge_ssl.commands", "edge_ssl.cli", "rich", "typer")


@pytest.mark.parametrize("package", STAGES)
def test_no_stage_imports_the_cli_or_draws(package: str) -> None:
    """Only the CLI renders: the stages return results and log."""
    found = []
    for path in sorted((ROOT / package).glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {name}" for name in names
                      if any(name == cli or name.startswith(cli + ".") for cli in CLI_ONLY)]
    assert not found, found


@pytest.mark.parametrize("package", STAGES)
def test_stage_modules_read_in_one_sitting(package: str) -> None:
    long = [f"{p.name}: {n}" for p in sorted((ROOT / package).glob("*.py"))
            if (n := len(p.read_text().splitlines())) > 350]
    assert not long, long
