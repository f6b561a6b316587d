"""What a local Lambda environment runs: the runtime's Python and the function's code.

On AWS a python3.12 function runs on the runtime's own interpreter, with the code of its
zip in `LAMBDA_TASK_ROOT` (/var/task), the runtime's bootstrap in `LAMBDA_RUNTIME_DIR`
(/var/runtime, which is `PYTHONPATH`) and the runtime's site-packages (boto3); nothing of
the machine that built the zip. Locally:

- **the interpreter** is a virtualenv of `requirements.txt` only, made with the Python
  3.12 the Lambda runtime is (`TASK_RUNNER_LAMBDA_PYTHON`, which make sets; else found as
  infra/find-python.js finds it), kept in `~/.cache/task-runner/lambda-python/<hash>/`
  (`python -m runner.local.lambda_runtime` makes it; make does before the stack starts).
  The zip's own dependencies are aarch64 wheels, which cannot run here; these are the
  same pins. Without a 3.12 the host's Python is used, with a warning.
- **the task root** is a fresh directory holding what the zip holds: the files
  serverless.yml's `package.patterns` select from the working tree (never runner/local/),
  plus the modules the stack was told to load that the zip does not hold (the demo's and
  the user's task modules, a test's handlers), copied in: a module file, or a package's
  whole directory, with its parent packages' `__init__.py`.
- **the runtime directory** holds only the worker (runner/local/lambda_worker.py) and
  the stand-in for CloudWatch Logs' metric extraction (runner/local/emf.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from runner.local.template import CACHE_DIR, ROOT

log = logging.getLogger(__name__)

RUNTIME_VERSION = (3, 12)
VENV_CACHE = CACHE_DIR.parent / "lambda-python"
WORKER = Path(__file__).with_name("lambda_worker.py")
# CloudWatch Logs' metric extraction runs beside the worker, as the service does outside
# the function: never in its task root (runner/local is not in the zip).
RUNTIME_FILES = (WORKER, Path(__file__).with_name("emf.py"))
# Never walked for package patterns (serverless.yml excludes them all anyway).
SKIPPED_DIRS = {"node_modules", "__pycache__"}
# PATH in an environment: the interpreter's own bin first, as /var/lang/bin is on Lambda.
SYSTEM_PATH = ("/usr/local/bin", "/usr/bin", "/bin")


class LambdaRuntimeError(Exception):
    """The runtime's interpreter could not be made, or a module to load was not found."""


# --- the interpreter -------------------------------------------------------------------


def _runtime_base_python() -> str | None:
    """Python 3.12: TASK_RUNNER_LAMBDA_PYTHON, else what infra/find-python.js finds."""
    named = os.environ.get("TASK_RUNNER_LAMBDA_PYTHON")
    if named:
        return named
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        found = subprocess.run(
            ["node", str(ROOT / "infra" / "find-python.js"), "3.12"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        ).stdout.strip()
        if found:
            return found
    return None


def _version_of(python: str) -> str:
    return subprocess.run(
        [python, "-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout.strip()


def runtime_python(requirements: Path = ROOT / "requirements.txt") -> str:
    """The interpreter of a virtualenv of `requirements` made with the runtime's Python
    (made once, then cached by interpreter version and requirements)."""
    base = _runtime_base_python()
    if base is None:
        log.warning(
            "no Python %d.%d (TASK_RUNNER_LAMBDA_PYTHON, PATH, pyenv): local Lambda "
            "environments run on %s",
            *RUNTIME_VERSION,
            sys.executable,
        )
        base = sys.executable
    version = _version_of(base)
    digest = hashlib.sha256(version.encode() + b"\0" + requirements.read_bytes()).hexdigest()
    venv = VENV_CACHE / f"{version}-{digest[:12]}"
    python = venv / "bin" / "python"
    stamp = venv / ".installed"
    if stamp.is_file():
        return str(python)
    VENV_CACHE.mkdir(parents=True, exist_ok=True)
    with open(VENV_CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one builder at a time (parallel tests, worktrees)
        if stamp.is_file():
            return str(python)
        shutil.rmtree(venv, ignore_errors=True)
        log.warning("making the Lambda runtime's Python %s in %s (once, ~1 min)", version, venv)
        for command in (
            [base, "-m", "venv", str(venv)],
            [str(python), "-m", "pip", "install", "-q", "-r", str(requirements)],
        ):
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise LambdaRuntimeError(
                    f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
                )
        stamp.touch()
    return str(python)


def system_path(python: str) -> str:
    return os.pathsep.join((str(Path(python).parent), *SYSTEM_PATH))


# --- the code --------------------------------------------------------------------------


def _pattern(glob: str) -> re.Pattern[str]:
    """A serverless `package.patterns` glob (micromatch: `**` spans directories)."""
    out = ""
    i = 0
    while i < len(glob):
        if glob.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif glob.startswith("**", i):
            out, i = out + ".*", i + 2
        elif glob[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif glob[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(glob[i]), i + 1
    return re.compile(out + r"\Z")


def package_patterns(service_dir: Path = ROOT) -> list[str]:
    """serverless.yml's `package.patterns`."""
    import yaml  # type: ignore[import-untyped]

    class Loader(yaml.SafeLoader):  # type: ignore[misc]
        pass

    def any_tag(loader: Any, suffix: str, node: Any) -> None:
        return None

    Loader.add_multi_constructor("!", any_tag)
    text = (service_dir / "serverless.yml").read_text()
    config = yaml.load(text, Loader=Loader)  # a SafeLoader: tags are ignored
    return [str(p) for p in config.get("package", {}).get("patterns", [])]


def packaged_files(service_dir: Path = ROOT) -> list[str]:
    """The working tree's files the zip holds (its own code, not the requirements),
    chosen by `package.patterns` as serverless chooses them: in order, the last
    matching pattern decides, a `!` pattern excludes."""
    rules = [
        (p.startswith("!"), _pattern(p.removeprefix("!"))) for p in package_patterns(service_dir)
    ]
    chosen = []
    for directory, dirs, files in os.walk(service_dir):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d not in SKIPPED_DIRS)
        for name in files:
            relative = Path(directory, name).relative_to(service_dir).as_posix()
            included = True
            for excluded, rule in rules:
                if rule.match(relative):
                    included = not excluded
            if included:
                chosen.append(relative)
    return sorted(chosen)


def module_files(names: Iterable[str]) -> list[tuple[str, str]]:
    """(source path, path in the task root) for each module to load, found as this
    process would import it: the module's file, or a package's whole directory, and its
    parent packages' `__init__.py`."""
    found: list[tuple[str, str]] = []
    for name in names:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None:
            raise LambdaRuntimeError(f"no module named {name!r} to load in Lambda")
        origin = Path(spec.origin)
        parts = name.split(".")
        if spec.submodule_search_locations:  # a package: its directory
            source, depth = origin.parent, len(parts)
        else:
            source, depth = origin, len(parts)
        base = source.parents[depth - 1] if depth > 1 else source.parent
        if source.is_dir():
            for path in sorted(source.rglob("*")):
                if path.is_file() and "__pycache__" not in path.parts:
                    found.append((str(path), path.relative_to(base).as_posix()))
        else:
            found.append((str(source), source.relative_to(base).as_posix()))
        for level in range(1, len(parts)):
            init = base.joinpath(*parts[:level], "__init__.py")
            if init.is_file():
                found.append((str(init), init.relative_to(base).as_posix()))
    return found


class Code:
    """A task root and a runtime directory for one Lambda service, removed at `close`."""

    def __init__(self, service_dir: Path = ROOT) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="lambda-"))
        self.task_root = self._dir / "task"
        self.runtime_dir = self._dir / "runtime"
        self.runtime_dir.mkdir(parents=True)
        for path in RUNTIME_FILES:
            shutil.copy2(path, self.runtime_dir / path.name)
        for relative in packaged_files(service_dir):
            self._copy(str(service_dir / relative), relative)
        self._packaged = set(packaged_files(service_dir))

    def _copy(self, source: str, relative: str) -> None:
        target = self.task_root / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)

    def add(self, files: Iterable[tuple[str, str]]) -> None:
        """Copy modules in (`module_files`); the zip's own files are never replaced."""
        for source, relative in files:
            if relative not in self._packaged:
                self._copy(source, relative)

    def holds(self, module: str) -> bool:
        """The task root has this module (as a file or a package)."""
        path = self.task_root.joinpath(*module.split("."))
        return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()

    def close(self) -> None:
        shutil.rmtree(self._dir, ignore_errors=True)


def main() -> int:
    """Make (or find) the runtime's interpreter and print it."""
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    print(runtime_python())
    return 0


if __name__ == "__main__":
    sys.exit(main())
