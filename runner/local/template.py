"""`sls package` for the local stack, cached by the content of what shapes the template.

The template depends on serverless.yml, the files it includes (infra/, statemachine/),
the plugins (package-lock.json), requirements.txt, the stage and the region; not on the
Python code, which the local stack runs from the working tree. Packaging takes 5-10 s,
so the result is kept in `~/.cache/task-runner/local-stack/<hash>/` (outside the
repository: `sls package --package DIR` stages in `.serverless/` and copies it all to DIR,
so DIR cannot be inside `.serverless/`).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
CACHE_DIR = (
    Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "task-runner" / "local-stack"
)
TEMPLATE_FILE = "cloudformation-template-update-stack.json"
# The inputs of the packaged template: files, and directories read recursively. The
# recurring schedules task types declare are in it (infra/recurring-schedules.js).
TEMPLATE_INPUTS = (
    "serverless.yml",
    "infra",
    "statemachine",
    "package-lock.json",
    "requirements.txt",
    # infra/metrics.js makes an alarm per registered task type; infra/recurring-schedules.js
    # the schedules they declare
    "tasks",
    "runner/metrics.py",
    "runner/recurring.py",
)
PACKAGE_TIMEOUT_SECONDS = 300


class PackagingError(Exception):
    """`sls package` failed or is not installed."""


def template_inputs_digest(service_dir: Path, *, stage: str, region: str) -> str:
    """A hash of everything that shapes the packaged template."""
    digest = hashlib.sha256(f"{stage}\0{region}\0".encode())
    for name in TEMPLATE_INPUTS:
        path = service_dir / name
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            if file.is_file():
                digest.update(str(file.relative_to(service_dir)).encode() + b"\0")
                digest.update(file.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _sls(service_dir: Path) -> Path:
    for base in (service_dir, ROOT):
        candidate = base / "node_modules" / ".bin" / "sls"
        if candidate.exists():
            return candidate
    raise PackagingError("node_modules/.bin/sls is missing: run `npm ci` (or `make install`)")


def _tool_env() -> dict[str, str]:
    """Dummy credentials and no telemetry: packaging never talks to AWS."""
    env = {k: v for k, v in os.environ.items() if k not in {"AWS_PROFILE", "AWS_ENDPOINT_URL"}}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",
        SLS_TELEMETRY_DISABLED="1",
        SLS_NOTIFICATIONS_MODE="off",
    )
    venv_bin = ROOT / ".venv" / "bin"
    if venv_bin.is_dir():
        env["PATH"] = f"{venv_bin}{os.pathsep}{env.get('PATH', '')}"
    return env


def package_service(
    service_dir: Path = ROOT, *, stage: str, region: str, use_cache: bool = True
) -> Path:
    """The directory holding `sls package`'s template and zip for this service and stage."""
    service_dir = service_dir.resolve()
    target = CACHE_DIR / template_inputs_digest(service_dir, stage=stage, region=region)
    if use_cache and (target / TEMPLATE_FILE).is_file():
        log.info("using the packaged template in %s", target)
        return target
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="package-", dir=CACHE_DIR))
    log.info("packaging %s (sls package --stage %s, 5-10 s)", service_dir, stage)
    result = subprocess.run(
        [
            str(_sls(service_dir)),
            "package",
            "--stage",
            stage,
            "--region",
            region,
            "--package",
            str(scratch),
        ],
        cwd=service_dir,
        env=_tool_env(),
        capture_output=True,
        text=True,
        timeout=PACKAGE_TIMEOUT_SECONDS,
        check=False,
    )
    if result.returncode != 0 or not (scratch / TEMPLATE_FILE).is_file():
        shutil.rmtree(scratch, ignore_errors=True)
        raise PackagingError(f"sls package failed:\n{result.stdout}\n{result.stderr}")
    # The requirements pip fetched are in the zip already.
    shutil.rmtree(scratch / "requirements", ignore_errors=True)
    if target.exists():
        if use_cache:  # another process packaged the same inputs meanwhile
            shutil.rmtree(scratch, ignore_errors=True)
            return target
        shutil.rmtree(target)
    scratch.rename(target)
    return target
