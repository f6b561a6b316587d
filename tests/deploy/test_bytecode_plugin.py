"""infra/compile-bytecode.js on a small zip, driven as osls drives it: the interpreter it
compiles with (custom.bytecode.pythonBin first) and the record it leaves beside the zip,
which tests/deploy/test_package.py reads to agree with it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.deploy.conftest import ROOT

NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="needs node")

# Builds a one-module zip, runs the plugin's package hook on it, prints the zip's names.
RUN_PLUGIN = """
const fs = require('fs');
const path = require('path');
const JSZip = require('jszip');
const CompileBytecode = require('./infra/compile-bytecode.js');
const [zipPath, custom] = [process.argv[1], JSON.parse(process.argv[2])];
(async () => {
  const zip = new JSZip();
  zip.file('handler.py', 'X = 1\\n');
  fs.writeFileSync(zipPath, await zip.generateAsync({ type: 'nodebuffer' }));
  const serverless = {
    service: {
      service: 'svc',
      custom: { bytecode: custom },
      provider: { runtime: 'python3.12' },
      package: { artifact: zipPath, individually: false },
      functions: {},
    },
    serviceDir: path.dirname(zipPath),
    cli: { log: (message) => process.stderr.write(`${message}\\n`) },
    classes: { Error },
  };
  await new CompileBytecode(serverless).hooks['after:package:createDeploymentArtifacts']();
  const names = Object.keys((await JSZip.loadAsync(fs.readFileSync(zipPath))).files);
  process.stdout.write(JSON.stringify(names.sort()));
})().catch((error) => {
  process.stderr.write(`${error.stack}\\n`);
  process.exit(1);
});
"""


def run_plugin(tmp_path: Path, custom: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """The zip's names after the plugin ran, and the record it wrote beside the zip."""
    zip_path = tmp_path / "svc.zip"
    # No Python 3.12 for the plugin to find by itself: only custom.bytecode can name one
    env = {
        "PATH": str(Path(str(NODE)).parent),
        "PYENV_ROOT": str(tmp_path / "no-pyenv"),
        "HOME": str(tmp_path),
        "NODE_PATH": str(ROOT / "node_modules"),
    }
    done = subprocess.run(
        [str(NODE), "-e", RUN_PLUGIN, str(zip_path), json.dumps(custom)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    record = json.loads((tmp_path / "svc.bytecode.json").read_text())
    return json.loads(done.stdout), record


def python_312() -> str:
    found = os.environ.get("TASK_RUNNER_LAMBDA_PYTHON")
    if not found:
        pytest.skip("no Python 3.12 here (TASK_RUNNER_LAMBDA_PYTHON, which make sets)")
    return found


def test_custom_python_bin_is_the_interpreter_used_and_recorded(tmp_path: Path) -> None:
    python = python_312()
    names, record = run_plugin(tmp_path, {"pythonBin": python})
    assert "__pycache__/handler.cpython-312.pyc" in names
    assert record == {"python": python, "version": "3.12", "compiled": 1, "modules": 1}


def test_a_custom_python_bin_of_another_version_ships_source_and_says_why(
    tmp_path: Path,
) -> None:
    # Given pythonBin naming a Python 3.11 (a stand-in that answers as one)
    fake = tmp_path / "python3.11"
    fake.write_text("#!/bin/sh\necho 3.11\n")
    fake.chmod(0o755)

    names, record = run_plugin(tmp_path, {"pythonBin": str(fake)})

    # Then the zip ships source only, and the record says no interpreter compiled it
    assert names == ["handler.py"]
    assert record["python"] is None and "is Python 3.11" in record["reason"]
