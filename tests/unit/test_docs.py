"""The README tells the truth about what can be generated or listed from the code."""

from __future__ import annotations

import re
from pathlib import Path

from runner.cli import Cli
from runner.config import Settings
from runner.local.diagram import diagram
from tasks import build_registry

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_diagram_is_generated_from_the_asl() -> None:
    text = README.read_text()
    block = re.search(
        r"<!-- diagram:start -->\n```mermaid\n(.*?)```\n<!-- diagram:end -->", text, re.S
    )
    assert block, "README lost its diagram markers"
    assert block.group(1) == diagram(), "run: python -m runner.local.diagram"


def test_readme_documents_every_cli_command_and_env_var() -> None:
    text = README.read_text()
    commands = [name.replace("_", "-") for name in vars(Cli) if not name.startswith("_")]
    for command in commands:
        assert f"`{command}" in text, command
    for definition in build_registry():
        assert f"create-task {definition.cli_name}" in text
    source = (Path(__file__).resolve().parents[2] / "runner" / "config.py").read_text()
    for name in set(re.findall(r'"((?:AWS|TASK_RUNNER)_[A-Z_]+)"', source)) - {
        "AWS_DEFAULT_REGION"
    }:
        assert f"`{name}`" in text, name
    assert Settings.from_env({}).table_name in text


def test_reliability_guarantees_point_at_tests_that_exist() -> None:
    root = README.parent
    text = README.read_text()
    references = re.findall(r"`(tests/[\w/]+\.py)(?:::(\w+))?`", text)
    assert len(references) >= 10
    for path, name in references:
        source = (root / path).read_text()
        if name:
            assert f"def {name}(" in source, f"{path}::{name}"
