"""`python -m runner.local demo` (what `make demo` runs) passes and exits 0."""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.e2e.conftest import REPORT, ROOT, base_env

pytestmark = pytest.mark.slow

# The bound for the whole demo on a fresh clone (packaging included).
DEMO_BUDGET_SECONDS = 60


def test_demo_settles_every_task_as_expected_and_exits_zero() -> None:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "runner.local", "demo"],
        cwd=ROOT,
        env=base_env(),
        capture_output=True,
        text=True,
        timeout=DEMO_BUDGET_SECONDS * 2,
        check=False,
    )
    elapsed = time.perf_counter() - started
    REPORT.append(f"demo: {elapsed:.1f} s, exit {result.returncode}")

    assert result.returncode == 0, result.stdout + result.stderr
    assert "Demo passed" in result.stdout
    # Execution names: <task id>-<digest of id and created_at>-<episode>
    lines = result.stdout.splitlines()
    for name in ("flaky-once", "flaky-twice"):
        named = re.compile(rf"\b{name}-[0-9a-f]{{16}}-1\b")
        assert any(named.search(line) and "SUCCEEDED" in line for line in lines), name
    exhausted = re.compile(r"\balways-failing-[0-9a-f]{16}-1\b")
    assert any(exhausted.search(line) and "FAILED" in line for line in lines)
    assert elapsed < DEMO_BUDGET_SECONDS
