"""Package the service once per session with `sls package` and share the result.

These tests need the npm toolchain (`npm ci`) and, for checkov, `.venv-checkov`: both are
installed by `make install`, which `make test` runs first.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE_BIN = ROOT / "node_modules" / ".bin"
STAGE = "test"
ARTIFACT = "task-runner.zip"

# Measurements shown at the end of the run (see pytest_terminal_summary below).
REPORT: list[str] = []


SLS = NODE_BIN / "sls"
ASL_VALIDATOR = NODE_BIN / "asl-validator"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"


def installed(path: Path) -> str:
    """A tool installed by `make install`; fails with the fix if it is missing."""
    if not path.exists():
        pytest.fail(f"{path} is missing: run `make install`")
    return str(path)


def tool_env() -> dict[str, str]:
    """The environment for subprocesses: dummy credentials, never a real profile."""
    env = {k: v for k, v in os.environ.items() if k not in {"AWS_PROFILE", "AWS_ENDPOINT_URL"}}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        AWS_DEFAULT_REGION="us-east-1",
        AWS_REGION="us-east-1",
        SLS_TELEMETRY_DISABLED="1",
        SLS_NOTIFICATIONS_MODE="off",
        PATH=f"{NODE_BIN}{os.pathsep}{env.get('PATH', '')}",
    )
    return env


def run_timed(label: str, args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """Run a tool from the repo root, recording how long it took."""
    started = time.perf_counter()
    result = subprocess.run(
        args, cwd=ROOT, env=tool_env(), capture_output=True, text=True, check=False, **kwargs
    )
    REPORT.append(f"{label}: {time.perf_counter() - started:.1f} s")
    return result


@dataclass(frozen=True)
class Packaged:
    """What `sls package` wrote."""

    directory: Path
    template: dict[str, Any]
    zip_path: Path

    @property
    def template_path(self) -> Path:
        return self.directory / "cloudformation-template-update-stack.json"

    def resource(self, logical_id: str) -> dict[str, Any]:
        resources: dict[str, dict[str, Any]] = self.template["Resources"]
        assert logical_id in resources, f"{logical_id} not in the template"
        return resources[logical_id]

    def resources_of_type(self, resource_type: str) -> dict[str, dict[str, Any]]:
        return {
            logical_id: resource
            for logical_id, resource in self.template["Resources"].items()
            if resource["Type"] == resource_type
        }

    def zip_names(self) -> list[str]:
        with zipfile.ZipFile(self.zip_path) as archive:
            return archive.namelist()


@pytest.fixture(scope="session")
def packaged(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Packaged]:
    """`sls package --stage test` into a temporary directory, once per session."""
    directory = tmp_path_factory.mktemp("sls-package")
    result = run_timed(
        "sls package", [installed(SLS), "package", "--stage", STAGE, "--package", str(directory)]
    )
    assert result.returncode == 0, f"sls package failed:\n{result.stdout}\n{result.stderr}"
    template = json.loads((directory / "cloudformation-template-update-stack.json").read_text())
    yield Packaged(directory=directory, template=template, zip_path=directory / ARTIFACT)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if REPORT:
        terminalreporter.section("deploy packaging")
        for line in REPORT:
            terminalreporter.write_line(line)
