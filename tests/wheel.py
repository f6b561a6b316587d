"""The package a producer installs: the wheel built from this repository (once per run,
from a copy of the files a build reads, so the work tree stays clean)."""

from __future__ import annotations

import functools
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# What `pip wheel .` reads: the project file, the README it names, the package.
BUILD_INPUTS = ("pyproject.toml", "README.md", "runner")


@functools.cache
def built_wheel() -> Path:
    source = Path(tempfile.mkdtemp(prefix="wheel-src-"))
    for name in BUILD_INPUTS:
        path = ROOT / name
        if path.is_dir():
            shutil.copytree(path, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(path, source / name)
    out = Path(tempfile.mkdtemp(prefix="wheel-"))
    # No build isolation: setuptools is pinned in requirements-dev.txt, as in [build-system].
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
         "-q", "-w", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )  # fmt: skip
    (wheel,) = out.glob("task_runner-*.whl")
    return wheel
