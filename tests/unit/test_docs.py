"""The README tells the truth about what can be generated or listed from the code."""

from __future__ import annotations

import re
from pathlib import Path

from runner.cli import Cli
from runner.config import Settings
from runner.local.diagram import diagram
from tasks import build_registry

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
SERVERLESS = ROOT / "serverless.yml"


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


def test_readme_quotes_the_mappings_record_age_as_serverless_yml_sets_it() -> None:
    text = README.read_text()
    configured = set(re.findall(r"maximumRecordAgeInSeconds: (\d+)", SERVERLESS.read_text()))
    quoted = set(re.findall(r"maximumRecordAgeInSeconds: (\d+)", text))
    assert len(configured) == 1 and quoted == configured, (quoted, configured)
    # The stream keeps records 24 hours, but the mappings discard them sooner
    assert "stream's 24 hours" not in text


def test_readme_pause_snippet_names_the_stages_table_and_function() -> None:
    text = README.read_text()
    start = text.index("Pausing on AWS")
    intro = text[start : text.index("```sh", start)]
    block = re.findall(r"```sh\n(.*?)```", text[start:], re.S)[0]
    service = re.search(r"^service: (\S+)", SERVERLESS.read_text(), re.M)
    table = re.search(r"TableName: (\S+)", (ROOT / "infra" / "resources.yml").read_text())
    assert service and table
    stage_table = table.group(1).replace("${sls:stage}", "prod")
    assert f"export AWS_DYNAMO_DB_TABLE_NAME={stage_table}" in block
    assert f"--function-name {service.group(1)}-prod-processStream" in block
    # What it needs beyond the set-up is named before it: jq
    assert "jq" not in block or "jq" in intro
    assert re.search(r"(^|\$\()aws ", block, re.M) is None, "the AWS CLI make installs"


def test_readme_and_help_list_every_exit_status() -> None:
    from runner import cli_help, cli_output

    text = README.read_text()
    statuses = text[text.index("- **Exit status**") :].split("\n- ")[0].split("\n\n")[0]
    codes = [value for name, value in vars(cli_output).items() if name.startswith("EXIT_")]
    for code in codes:
        assert f" {code} " in f" {' '.join(statuses.split())} ", code
        assert f" {code} " in f" {cli_help.OUTPUT_NOTE} ".replace(",", " "), code
