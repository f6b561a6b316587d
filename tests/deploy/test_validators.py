"""Linters over the packaged template and the state machine: cfn-lint, checkov, asl-validator."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

from tests.deploy.conftest import (
    ASL_VALIDATOR,
    CHECKOV,
    ROOT,
    Packaged,
    installed,
    run_timed,
)

pytestmark = pytest.mark.slow

ASL_PATH = ROOT / "statemachine" / "retry.asl.json"
PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9_]*)\}")
SAMPLE_VALUES = {
    "RunTaskFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:task-runner-test-runTask",
    "ExportFunctionArn": (
        "arn:aws:lambda:us-east-1:123456789012:function:task-runner-test-runExport"
    ),
}


def rendered_definition() -> str:
    return PLACEHOLDER.sub(lambda m: SAMPLE_VALUES[m.group(1)], ASL_PATH.read_text())


def test_cfn_lint_passes(packaged: Packaged) -> None:
    # .cfnlintrc.yaml in the repo root lists the ignored checks and why
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    result = run_timed("cfn-lint", [installed(cfn_lint), str(packaged.template_path)])

    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_finds_nothing_beyond_the_accepted_findings(packaged: Packaged) -> None:
    # Without a Prisma Cloud key checkov knows no severities, so every failed check
    # counts; accepted ones are skipped, with reasons, in .checkov.yaml.
    result = run_timed(
        "checkov",
        [
            installed(CHECKOV),
            "--config-file",
            str(ROOT / ".checkov.yaml"),
            "-f",
            str(packaged.template_path),
            "-o",
            "json",
        ],
    )
    report = json.loads(result.stdout)

    failed = [
        f"{check['check_id']} {check['resource']}: {check['check_name']}"
        for check in report["results"]["failed_checks"]
    ]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["passed"] > 0
    assert result.returncode == 0, result.stderr


def test_asl_validator_accepts_the_definition_file_and_its_rendering(tmp_path: Path) -> None:
    rendered = tmp_path / "retry.rendered.asl.json"
    rendered.write_text(rendered_definition())

    for path in (ASL_PATH, rendered):
        result = run_timed("asl-validator", [installed(ASL_VALIDATOR), "--json-path", str(path)])
        assert result.returncode == 0, result.stdout + result.stderr


def test_moto_parses_the_definition() -> None:
    # asl-validator misses bad enum values (JitterStrategy) that moto's parser rejects
    with mock_aws(config={"stepfunctions": {"execute_state_machine": True}}):
        client = boto3.client("stepfunctions", region_name="us-east-1")
        client.create_state_machine(
            name="retry-parse-check",
            definition=rendered_definition(),
            roleArn="arn:aws:iam::123456789012:role/retry",
        )


def test_placeholders_are_exactly_the_template_substitutions(packaged: Packaged) -> None:
    placeholders = set(PLACEHOLDER.findall(ASL_PATH.read_text()))
    props = packaged.resource("RetryStateMachine")["Properties"]

    assert placeholders == set(props["DefinitionSubstitutions"]) == set(SAMPLE_VALUES)
