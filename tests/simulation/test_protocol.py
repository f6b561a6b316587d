"""The quick pass of the protocol simulation (part of `make test`).

Runs the state machine for SIM_EXAMPLES examples from SIM_SEED and fails on any
violation that no known defect of issue 11 explains (tests/simulation/known_defects.py);
the known ones are reported in the summary, with the fault matrix in
tests/simulation/results/quick.txt. `make faults` runs the long pass.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.simulation import campaign, matrix

SEED = int(os.environ.get("SIM_SEED", "20261201"))
EXAMPLES = int(os.environ.get("SIM_EXAMPLES", "100"))
STEPS = int(os.environ.get("SIM_STEPS", str(campaign.DEFAULT_STEPS)))
RESULTS = Path(__file__).resolve().parent / "results"
# Read by this directory's conftest for pytest's terminal summary.
SUMMARY: list[str] = []


@pytest.mark.timeout(900)
def test_quick_pass_finds_no_violation_beyond_the_known_defects() -> None:
    result = campaign.run(
        seed=SEED, examples=EXAMPLES, steps=STEPS, mode="check", shrink_seconds=120
    )
    built = matrix.build(result)
    text = matrix.render(result, built)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "quick.txt").write_text(text)
    replay = f"python -m tests.simulation check --seed {SEED} --examples {EXAMPLES} --steps {STEPS}"
    SUMMARY[:] = [*matrix.summary(result, built), "  matrix: tests/simulation/results/quick.txt"]
    assert result.failure is None, (
        f"{result.failure}\n{result.falsifying}\nreplay: {replay} (or make faults MODE=check "
        f"SEED={SEED} EXAMPLES={EXAMPLES} STEPS={STEPS})"
    )
