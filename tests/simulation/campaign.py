"""Running the state machine: one seed, N examples, in one of three modes.

- `survey` (make faults): every example runs to its end and reports; nothing raises;
  the fault matrix is built from all of them.
- `check` (make test's quick pass): a violation no known defect explains fails the run,
  and hypothesis shrinks it to the shortest sequence of steps and prints it.
- `hunt`: like check, but only the violations of one known defect raise, to get that
  defect's minimal failing sequence.

A run is reproducible from its seed alone (hypothesis is seeded, the examples' worlds
are seeded by what hypothesis draws, time is virtual and threads take turns).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import hypothesis
from hypothesis import HealthCheck, Phase, settings
from hypothesis.stateful import run_state_machine_as_test

from tests.simulation import known_defects
from tests.simulation.machine import CAMPAIGN, Campaign, ProtocolMachine
from tests.simulation.topology import load_topology
from tests.simulation.world import RawClients

# Steps per example: enough for a task to go through routing, a few retries and a sweep.
DEFAULT_STEPS = 40


@dataclass
class RunResult:
    mode: str
    seed: int
    examples: int
    steps: int
    seconds: float
    reports: list[dict[str, Any]] = field(default_factory=list)
    failure: BaseException | None = None
    unsimulated: tuple[str, ...] = ()

    @property
    def falsifying(self) -> str:
        """Hypothesis' account of the shrunk failing example (its steps, and the blob)."""
        if self.failure is None:
            return ""
        notes = getattr(self.failure, "__notes__", [])
        return "\n".join(str(n) for n in notes)

    @property
    def replay(self) -> str:
        return f"make faults SEED={self.seed} EXAMPLES={self.examples} STEPS={self.steps}"


@contextlib.contextmanager
def aws_sandbox() -> Iterator[RawClients]:
    """moto in-process, made atomic and DynamoDB-sized; dummy credentials; quiet logs."""
    import boto3
    from moto import mock_aws

    from runner.local.dynamodb_fidelity import dynamodb_fidelity
    from runner.local.motoserver import serialised_dynamodb

    saved = {k: os.environ.get(k) for k in _ENV}
    os.environ.update(_ENV)
    for name in ("AWS_ENDPOINT_URL", "AWS_PROFILE", "AWS_LAMBDA_FUNCTION_NAME", "LAMBDA_TASK_ROOT"):
        saved.setdefault(name, os.environ.pop(name, None))
    logger = logging.getLogger("task-runner")
    level = logger.level
    logger.setLevel(os.environ.get("SIM_LOG_LEVEL", "CRITICAL"))
    try:
        with contextlib.ExitStack() as stack:
            if not _fidelity_installed():
                stack.enter_context(serialised_dynamodb())
                stack.enter_context(dynamodb_fidelity())
            stack.enter_context(mock_aws())
            yield RawClients(boto3.Session(region_name="us-east-1"))
    finally:
        logger.setLevel(level)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    "POWERTOOLS_LOG_LEVEL": os.environ.get("SIM_LOG_LEVEL", "CRITICAL"),
}


def _fidelity_installed() -> bool:
    """True inside pytest, whose session fixture already patched moto (tests/conftest)."""
    from moto.dynamodb.models import DynamoDBBackend

    return getattr(DynamoDBBackend.update_item, "__qualname__", "").startswith("dynamodb_fidelity")


def run(
    *,
    seed: int,
    examples: int,
    steps: int = DEFAULT_STEPS,
    mode: str = "survey",
    defect: int | None = None,
    blob: str | None = None,
    shrink_seconds: float | None = None,
) -> RunResult:
    """Run the machine; returns every example's report (and the failure, if one raised).

    Shrinking a failure stops after `shrink_seconds` (hypothesis' own limit is 5 min).
    """
    from hypothesis.internal.conjecture import engine

    started = time.monotonic()
    result = RunResult(mode, seed, examples, steps, 0.0)
    phases = [Phase.generate] if mode == "survey" else [Phase.generate, Phase.shrink]
    config = settings(
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        database=None,
        derandomize=False,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        print_blob=True,
        report_multiple_bugs=False,
    )

    def factory() -> ProtocolMachine:
        return ProtocolMachine()

    seeded = hypothesis.seed(seed)(factory)
    if blob:
        version, _, data = blob.partition(":")
        seeded = hypothesis.reproduce_failure(version, data.encode())(seeded)
    with aws_sandbox() as raw:
        result.unsimulated = load_topology().unsimulated
        campaign = Campaign(
            topology=load_topology(),
            raw=raw,
            strict=mode == "check",
            only_defect=defect if mode == "hunt" else None,
            classify=known_defects.classify,
        )
        CAMPAIGN.append(campaign)
        limit = engine.MAX_SHRINKING_SECONDS
        if shrink_seconds is not None:
            engine.MAX_SHRINKING_SECONDS = int(shrink_seconds)
        try:
            run_state_machine_as_test(seeded, settings=config)  # type: ignore[no-untyped-call]
        except Exception as exc:  # a violation raised (check/hunt), shrunk and printed
            result.failure = exc
        finally:
            engine.MAX_SHRINKING_SECONDS = limit
            CAMPAIGN.remove(campaign)
            result.reports = campaign.examples
    result.seconds = time.monotonic() - started
    return result
