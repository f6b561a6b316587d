"""infra/find-python.js, which `make` and the bytecode plugin use to find their Pythons,
against fake interpreters on a fake PATH and in a fake pyenv."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")

pytestmark = pytest.mark.skipif(NODE is None, reason="needs node")


def fake_python(path: Path, version: str | None) -> None:
    """An executable that answers as Python `version` does, or fails as a pyenv shim."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if version is None:
        body = 'echo "pyenv: $(basename "$0"): command not found" >&2; exit 127'
    else:
        major, minor = version.split(".")[:2]
        body = f'echo "{path}"; echo "{major} {minor}"'
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)


def find(spec: str, tmp_path: Path) -> str:
    done = subprocess.run(
        [str(NODE), str(ROOT / "infra" / "find-python.js"), spec],
        env={"PATH": str(tmp_path / "bin"), "PYENV_ROOT": str(tmp_path / "pyenv")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode in (0, 1) and done.stderr == ""
    return done.stdout.strip()


def pyenv(tmp_path: Path, version: str) -> Path:
    minor = ".".join(version.split(".")[:2])
    return tmp_path / "pyenv" / "versions" / version / "bin" / f"python{minor}"


def test_a_failing_shim_on_path_gives_way_to_pyenvs_interpreter(tmp_path: Path) -> None:
    # The development machine: pyenv's python3.12 shim fails unless 3.12 is selected
    fake_python(tmp_path / "bin" / "python3.12", None)
    fake_python(pyenv(tmp_path, "3.12.1"), "3.12")
    fake_python(pyenv(tmp_path, "3.12.9"), "3.12")
    fake_python(pyenv(tmp_path, "3.13.0"), "3.13")
    assert find("3.12", tmp_path) == str(pyenv(tmp_path, "3.12.9"))


def test_a_working_interpreter_on_path_comes_first(tmp_path: Path) -> None:
    fake_python(tmp_path / "bin" / "python3.12", "3.12")
    fake_python(pyenv(tmp_path, "3.12.1"), "3.12")
    assert find("3.12", tmp_path) == str(tmp_path / "bin" / "python3.12")


def test_the_virtualenv_python_is_any_3_11_or_newer(tmp_path: Path) -> None:
    # Only a 3.13 installed, and python3 too old: make must not ask for python3.11 by name
    fake_python(tmp_path / "bin" / "python3", "3.10")
    fake_python(tmp_path / "bin" / "python3.13", "3.13")
    assert find("3.11+", tmp_path) == str(tmp_path / "bin" / "python3.13")
    # python3 is the first choice when it qualifies
    fake_python(tmp_path / "bin" / "python3", "3.12")
    assert find("3.11+", tmp_path) == str(tmp_path / "bin" / "python3")


def test_pyenv_is_searched_when_path_has_none(tmp_path: Path) -> None:
    fake_python(pyenv(tmp_path, "3.10.13"), "3.10")
    fake_python(pyenv(tmp_path, "3.13.0"), "3.13")
    assert find("3.11+", tmp_path) == str(pyenv(tmp_path, "3.13.0"))
    assert find("3.12", tmp_path) == ""


def test_nothing_found_prints_nothing_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "bin").mkdir()
    done = subprocess.run(
        [str(NODE), str(ROOT / "infra" / "find-python.js"), "3.12"],
        env={"PATH": str(tmp_path / "bin"), "PYENV_ROOT": str(tmp_path / "nope")},
        capture_output=True,
        text=True,
        check=False,
    )
    assert (done.returncode, done.stdout) == (1, "")
