"""TTL never deletes a running task, and every other state expires (I5; review-11
finding 11): a claim removes `expires_at`, every outcome sets it again, and a TTL too
short to outlast a retry is refused."""

from __future__ import annotations

import pytest

from runner.app import App
from runner.config import Settings
from runner.errors import ConfigurationError
from runner.items import iso, utcnow
from runner.model import AttemptRecord, ClaimSource, TaskErrorInfo, TaskStatus
from tests.helpers import pending, put_raw


def test_a_workflow_claim_is_never_ttls_to_delete_and_its_retrying_outcome_expires(
    app: App,
) -> None:
    # Given a retryable FAILED task carrying the expiry its failure set
    expiry = int(utcnow().timestamp()) + 3600
    put_raw(
        app.clients.dynamodb,
        app.settings.table_name,
        {
            **pending("r", "NOOP_TASK", {}),
            "status": "FAILED",
            "retryable": True,
            "episode": 1,
            "expires_at": expiry,
        },
    )

    # When a workflow attempt claims it
    task = app.store.claim_for_retry("r", episode=1, lease_seconds=60)

    # Then the running claim carries no expiry
    assert task.status is TaskStatus.PROCESSING
    assert app.store.get("r").expires_at is None

    # And its retryable outcome (RETRYING, waiting for the next attempt) expires again
    error = TaskErrorInfo(type="X", message="blip", retryable=True)
    attempt = AttemptRecord(
        attempt=task.attempts,
        episode=task.episode,
        source=ClaimSource.WORKFLOW.value,
        started_at=iso(utcnow()),
        finished_at=iso(utcnow()),
        outcome=TaskStatus.RETRYING,
        error=error,
    )
    app.store.record_outcome(task, TaskStatus.RETRYING, error=error, attempt=attempt)
    after = app.store.get("r")
    assert after.status is TaskStatus.RETRYING and after.expires_at is not None


@pytest.mark.parametrize("days", ["0", "-3"])
def test_a_result_ttl_shorter_than_a_day_is_refused(days: str) -> None:
    with pytest.raises(ConfigurationError, match="TASK_RUNNER_RESULT_TTL_DAYS"):
        Settings.from_env({"TASK_RUNNER_RESULT_TTL_DAYS": days})
