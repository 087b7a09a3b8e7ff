"""The README's install instructions say what pyproject.toml installs, platform by platform."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def runtime_requirements() -> list[Requirement]:
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return [Requirement(text) for text in project["dependencies"]]


def is_onnxruntime(requirement: Requirement) -> bool:
    return requirement.name.startswith("onnxruntime")


def test_the_jetson_command_installs_every_other_runtime_dependency() -> None:
    """Jetson users install the kit with --no-deps: the README's list must be complete."""
    (command,) = re.findall(r"^pip install (\"numpy.*)$", README, flags=re.MULTILINE)
    listed = sorted(re.findall(r'"([^"]+)"', command))
    expected = sorted(str(r) for r in runtime_requirements() if not is_onnxruntime(r))
    assert listed == expected


@pytest.mark.parametrize(("platform", "sys_platform", "machine"), [
    ("Linux x86_64", "linux", "x86_64"),
    ("Windows x86_64", "win32", "x86_64"),
    ("Linux aarch64", "linux", "aarch64"),
    ("macOS", "darwin", "arm64"),
    ("macOS", "darwin", "x86_64"),
])
def test_the_table_names_the_wheel_pip_picks(platform: str, sys_platform: str,
                                             machine: str) -> None:
    environment = {"sys_platform": sys_platform, "platform_machine": machine}
    picked = [r.name for r in runtime_requirements()
              if is_onnxruntime(r) and (r.marker is None or r.marker.evaluate(environment))]
    (row,) = [line for line in README.splitlines()
              if line.startswith("| ") and platform in line.split("|")[1]]
    assert picked == [row.split("|")[2].strip(" `")]


def test_ci_runs_the_test_command_the_readme_gives() -> None:
    command = re.search(r"^## Tests\n+```bash\n(pytest[^#\n]*?)\s*(?:#|\n)", README, re.M)
    assert command, "the Tests section starts with a block whose first line is a pytest command"
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci == f"EDGE_SSL_BROWSER_TEST=required {command.group(1)}"
