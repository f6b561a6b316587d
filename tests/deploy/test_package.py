"""The function zip: small, our code only, requirements built for Lambda arm64 Python 3.12."""

from __future__ import annotations

import pytest

from tests.deploy.conftest import REPORT, Packaged

pytestmark = pytest.mark.slow

MAX_ZIP_BYTES = 25 * 1024 * 1024
# Top-level names of requirements.txt's packages (and pydantic's compiled core).
BUNDLED = (
    "pydantic",
    "pydantic_core",
    "email_validator",
    "tenacity",
    "aws_xray_sdk",
    "aws_lambda_powertools",
    "fire",
)
# The Lambda runtime ships these (serverless.yml noDeploy).
NOT_BUNDLED = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "urllib3", "six")
# Never in the zip: the local stack, tests, tooling, virtualenvs.
EXCLUDED_PREFIXES = ("runner/local/", "tests/", "bench/", "docs/", "node_modules/", ".venv")


def top_level_names(names: list[str]) -> set[str]:
    return {name.split("/")[0].removesuffix(".py") for name in names}


def test_package_writes_the_template_and_one_zip(packaged: Packaged) -> None:
    # Given `sls package` ran, then the template and the single artifact exist
    assert packaged.template_path.is_file()
    assert packaged.zip_path.is_file()
    assert packaged.template["Resources"]


def test_zip_is_small_and_leaves_out_the_runtime_sdk(packaged: Packaged) -> None:
    size = packaged.zip_path.stat().st_size
    REPORT.append(f"function zip: {size / 1e6:.1f} MB ({len(packaged.zip_names())} files)")

    assert size < MAX_ZIP_BYTES
    present = top_level_names(packaged.zip_names())
    assert not present & set(NOT_BUNDLED)


def test_zip_carries_the_handler_and_requirements(packaged: Packaged) -> None:
    names = packaged.zip_names()
    present = top_level_names(names)

    assert {"handler", "runner", "tasks"} <= present
    assert set(BUNDLED) <= present
    assert not [name for name in names if name.startswith(EXCLUDED_PREFIXES)]
    # pip on the local 3.11 must not leave its own bytecode behind (--no-compile).
    assert not [name for name in names if name.endswith(".pyc")]


def test_pydantic_core_is_the_cpython_312_aarch64_build(packaged: Packaged) -> None:
    # Lambda runs python3.12 on arm64, whatever Python packaged it
    binaries = [
        name for name in packaged.zip_names() if name.startswith("pydantic_core/_pydantic_core")
    ]

    assert "pydantic_core/_pydantic_core.cpython-312-aarch64-linux-gnu.so" in binaries
    assert not [name for name in binaries if name.endswith(".so") and "312-aarch64" not in name]
