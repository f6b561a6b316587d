"""The function zip: small, our code only, requirements built for Lambda arm64 Python 3.12."""

from __future__ import annotations

import json
import os
import posixpath
import subprocess
import zipfile
from pathlib import Path

import pytest

from tests.deploy.conftest import ARTIFACT, REPORT, Packaged

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
EXCLUDED_PREFIXES = (
    "runner/local/",
    "runner/dashboard/",
    "tests/",
    "bench/",
    "docs/",
    "node_modules/",
    ".venv",
)
# The dashboard's dependencies (requirements-dashboard.txt), which no function needs.
DASHBOARD_ONLY = ("starlette", "jinja2", "markupsafe", "uvicorn", "h11", "click", "anyio")


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


def test_zip_leaves_out_the_dashboard_and_its_dependencies(packaged: Packaged) -> None:
    names = packaged.zip_names()

    assert not [n for n in names if n.startswith("runner/dashboard/")]
    assert not top_level_names(names) & set(DASHBOARD_ONLY)


def test_zip_carries_the_handler_and_requirements(packaged: Packaged) -> None:
    names = packaged.zip_names()
    present = top_level_names(names)

    assert {"handler", "runner", "tasks"} <= present
    assert set(BUNDLED) <= present
    assert not [name for name in names if name.startswith(EXCLUDED_PREFIXES)]
    # pip on the local 3.11 must not leave its own bytecode behind (--no-compile).
    assert not [name for name in names if ".cpython-311" in name]


def lambda_python(packaged: Packaged) -> str:
    """The runtime's interpreter infra/compile-bytecode.js compiled this package with, as
    it recorded beside the zip (custom.bytecode.pythonBin, the environment or PATH and
    pyenv), so the test and the plugin agree on whether there was one."""
    record = json.loads(
        (packaged.directory / ARTIFACT.replace(".zip", ".bytecode.json")).read_text()
    )
    if not record["python"]:
        if os.environ.get("CI"):
            pytest.fail(f"no Python 3.12 compiled the package's bytecode: {record['reason']}")
        pytest.skip(f"the package ships source only: {record['reason']}")
    return str(record["python"])


def cached_name(source: str) -> str:
    """Where Python 3.12 looks for a module's bytecode: pkg/__pycache__/mod.cpython-312.pyc"""
    folder, module = posixpath.split(source)
    return posixpath.join(folder, "__pycache__", f"{module[:-3]}.cpython-312.pyc")


# Run by the runtime's Python on one .pyc of the zip: its magic, flags and file name.
READ_PYC = """
import importlib.util, json, marshal, sys
data = open(sys.argv[1], "rb").read()
code = marshal.loads(data[16:])
print(json.dumps({"magic_ok": data[:4] == importlib.util.MAGIC_NUMBER,
                  "flags": int.from_bytes(data[4:8], "little"), "file": code.co_filename}))
"""


def test_zip_ships_unchecked_bytecode_for_every_module(packaged: Packaged, tmp_path: Path) -> None:
    # Given the runtime's Python was there when `sls package` ran
    python = lambda_python(packaged)
    names = packaged.zip_names()
    sources = [name for name in names if name.endswith(".py")]

    # Then every module has its cpython-312 .pyc beside it, so no cold start compiles it
    missing = [name for name in sources if cached_name(name) not in names]
    assert not missing, f"{len(missing)} of {len(sources)} modules lack bytecode: {missing[:5]}"
    # And it is the runtime's bytecode, loaded without checking the source (PEP 552 flags
    # 0b01), whose tracebacks name the source where Lambda unpacks it
    with zipfile.ZipFile(packaged.zip_path) as archive:
        pyc = tmp_path / "executor.pyc"
        pyc.write_bytes(archive.read("runner/__pycache__/executor.cpython-312.pyc"))
    read = subprocess.run(
        [python, "-c", READ_PYC, str(pyc)], capture_output=True, text=True, check=True
    )
    assert json.loads(read.stdout) == {
        "magic_ok": True,
        "flags": 0b01,
        "file": "/var/task/runner/executor.py",
    }


def test_pydantic_core_is_the_cpython_312_aarch64_build(packaged: Packaged) -> None:
    # Lambda runs python3.12 on arm64, whatever Python packaged it
    binaries = [
        name for name in packaged.zip_names() if name.startswith("pydantic_core/_pydantic_core")
    ]

    assert "pydantic_core/_pydantic_core.cpython-312-aarch64-linux-gnu.so" in binaries
    assert not [name for name in binaries if name.endswith(".so") and "312-aarch64" not in name]
