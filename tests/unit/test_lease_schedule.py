"""The state machine waits out a live lease on the lease's own timescale: a lease cut at
a runtime's end in seconds, the longest one an attempt can hold within its tries."""

from __future__ import annotations

import json

import pytest

from runner import runtime
from runner.executor import LEASE_GRACE_SECONDS
from runner.local.statemachine import ASL_PATH
from runner.registry import LONGEST_FUNCTION_SECONDS, MAX_TASK_TIMEOUT_SECONDS
from runner.runtime import DEADLINE_MARGIN_SECONDS

ASL = json.loads(ASL_PATH.read_text())


def lease_held_waits(state: str) -> list[float]:
    """The delays between the tries of `state` that meet TaskLeaseHeld (no jitter)."""
    (retrier,) = [r for r in ASL["States"][state]["Retry"] if r["ErrorEquals"] == ["TaskLeaseHeld"]]
    assert "JitterStrategy" not in retrier  # full jitter could retry at once, every time
    cap = retrier.get("MaxDelaySeconds", float("inf"))
    return [
        min(retrier["IntervalSeconds"] * retrier["BackoffRate"] ** n, cap)
        for n in range(retrier["MaxAttempts"])
    ]


@pytest.mark.parametrize("state", ["RunTask", "MarkRetriesExhausted"])
def test_a_lease_held_retry_outwaits_the_longest_lease_and_soon_meets_a_cut_one(
    state: str,
) -> None:
    # The longest lease: a claim of the longest task type, or an abandoned attempt's
    # outcome in the longest function, held past its hard deadline
    claim = MAX_TASK_TIMEOUT_SECONDS + LEASE_GRACE_SECONDS
    remaining = LONGEST_FUNCTION_SECONDS - DEADLINE_MARGIN_SECONDS
    abandoned = runtime.abandoned_lease(0, remaining, fallback=0)
    waits = lease_held_waits(state)
    assert sum(waits) > max(claim, abandoned)
    # A lease cut to EXIT_LEASE_SECONDS at a runtime's end: the first retries meet its end
    assert waits[0] <= runtime.EXIT_LEASE_SECONDS + 1
    assert sum(waits[:2]) >= runtime.EXIT_LEASE_SECONDS + 1
