"""Leases and stuck tasks: the sweeper recovers what the stream path left behind."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

import handler
from runner.app import App
from runner.attempts import AttemptInput
from runner.client import TaskRunnerClient
from runner.items import utcnow
from runner.local import demo_tasks
from runner.model import ClaimSource, TaskStatus
from runner.sweeper import Sweeper
from runner.workflow import routable
from tests.helpers import FakeLambdaContext, StreamReader, effect_key, pending, put_raw


@pytest.fixture
def swept_app(app: App, monkeypatch: pytest.MonkeyPatch) -> App:
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    return app


def _put_retryable_failure(app: App, task_id: str) -> None:
    item = {**pending(task_id, "NOOP_TASK", {}), "status": "FAILED", "episode": 1}
    put_raw(app.clients.dynamodb, app.settings.table_name, {**item, "retryable": True})


def _record_scan_segments(app: App) -> list[tuple[int, int]]:
    """(Segment, TotalSegments) of every Scan the app's client sends from now on."""
    scanned: list[tuple[int, int]] = []

    def record(params: dict[str, Any], **_: Any) -> None:
        scanned.append((params["Segment"], params["TotalSegments"]))

    app.clients.dynamodb.meta.events.register("provide-client-params.dynamodb.Scan", record)
    return scanned


def _later(app: App, seconds: float) -> None:
    app.store.clock = lambda: utcnow() + timedelta(seconds=seconds)


def test_crash_between_claim_and_completion_is_recovered_for_retry(swept_app: App) -> None:
    app = swept_app
    stream = StreamReader(
        app.clients.client("dynamodbstreams"),
        app.clients.dynamodb.describe_table(TableName=app.settings.table_name)["Table"][
            "LatestStreamArn"
        ],
    )
    task = TaskRunnerClient(app).create_task("NOOP_TASK", {})
    # Given a stream claim whose Lambda died before recording an outcome
    claimed = app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=60)
    assert claimed.lease_expires_at is not None
    # When the sweeper runs before the lease expires, nothing happens
    assert app.sweeper.sweep().expired_leases == 0
    # And after it expires, the task is FAILED (retryable, timed out) in a new episode
    _later(app, 120)
    report = handler.sweep({}, FakeLambdaContext())
    assert (report["expired_leases"], report["orphans_run"], report["errors"]) == (1, 0, 0)
    recovered = app.store.get(task.id)
    assert recovered.status is TaskStatus.FAILED and recovered.retryable
    assert recovered.error and recovered.error.type == "TaskTimedOut"
    assert recovered.episode == 1 and recovered.claim_token is None
    # Which is exactly the change routeFailed starts a retry for
    modify = [r for r in stream.read() if r["eventName"] == "MODIFY"][-1]
    ref = routable(modify)
    assert ref is not None and (ref.task_id, ref.episode) == (task.id, 1)
    # And the dead claim, should it wake up, can no longer record anything
    from runner.errors import TaskConflict
    from runner.model import AttemptRecord

    with pytest.raises(TaskConflict):
        app.store.record_outcome(
            claimed,
            TaskStatus.DONE,
            attempt=AttemptRecord(
                attempt=1, source="stream", started_at="x", finished_at="y", outcome=TaskStatus.DONE
            ),
        )


def test_workflow_claims_are_left_to_the_state_machine(swept_app: App) -> None:
    app = swept_app
    _put_retryable_failure(app, "wf")
    app.store.claim_for_retry("wf", episode=1, lease_seconds=60)
    _later(app, 3600)
    assert app.sweeper.expire_leases() == 0
    assert app.store.get("wf").status is TaskStatus.PROCESSING
    # The state machine's next attempt may take the dead claim over.
    assert app.store.claim_for_retry("wf", episode=1, lease_seconds=60).attempts == 2


def test_a_workflow_attempt_waits_out_a_live_lease(swept_app: App) -> None:
    from runner.errors import TaskLeaseHeld

    app = swept_app
    _put_retryable_failure(app, "held")
    # Given an attempt whose Lambda timed out while holding the task
    app.store.claim_for_retry("held", episode=1, lease_seconds=600)
    # When the state machine's next attempt comes, it is told to wait, not to fail
    with pytest.raises(TaskLeaseHeld):
        app.attempts.run(AttemptInput("held", 1))
    assert app.store.get("held").attempts == 1 and demo_tasks.EFFECTS == {}
    # And once the lease has expired, the attempt runs
    _later(app, 3600)
    assert app.attempts.run(AttemptInput("held", 1)).status is TaskStatus.DONE


def test_pending_tasks_the_stream_missed_are_run(swept_app: App) -> None:
    app = swept_app
    put_raw(app.clients.dynamodb, app.settings.table_name, pending("lost", "NOOP_TASK", {}))
    TaskRunnerClient(app).create_task("NOOP_TASK", {}, task_id="recent")
    # Young PENDING tasks are the stream's, not the sweeper's
    assert app.sweeper.run_orphans() == 1  # the hand-inserted one has no created_at: old
    _later(app, 3600)
    assert app.sweeper.run_orphans() == 1
    assert app.store.get("lost").status is TaskStatus.DONE
    assert app.store.get("lost").claimed_by is ClaimSource.SWEEPER
    assert app.store.get("recent").status is TaskStatus.DONE
    assert {effect_key(app, "lost"): 1, effect_key(app, "recent"): 1} == demo_tasks.EFFECTS


def test_scheduled_sweeps_scan_one_segment_each_and_cover_the_table(swept_app: App) -> None:
    # Given 40 PENDING tasks whose stream records were lost, and a sweeper in 13 segments
    app = swept_app
    for n in range(40):
        put_raw(
            app.clients.dynamodb, app.settings.table_name, pending(f"lost-{n}", "NOOP_TASK", {})
        )
    sweeper = Sweeper(app.store, app.dispatcher, scan_segments=13)
    scanned = _record_scan_segments(app)

    # When the schedule runs it 13 times, 5 minutes apart (a fixed start: the segment is
    # the run's 5-minute slot, and a wall clock crossing a slot's edge mid-test would
    # make two runs share one)
    found = []
    start = utcnow()
    for run in range(13):
        app.store.clock = lambda run=run: start + timedelta(minutes=5 * run)
        found.append(sweeper.sweep().orphans_run)

    # Then each run read one segment, together all 13, and every task ran exactly once
    assert sorted(segment for segment, _ in scanned) == list(range(13))
    assert {total for _, total in scanned} == {13}
    assert sum(found) == 40 and max(found) < 40
    assert {effect_key(app, f"lost-{n}"): 1 for n in range(40)} == demo_tasks.EFFECTS


def test_the_scheduled_sweep_scans_the_segment_of_its_scheduled_minute(
    swept_app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a sweeper configured to Scan in 13 segments, and the scheduled event
    # EventBridge sends at 08:05 (the function starts later)
    from dataclasses import replace

    app = App.build(
        replace(swept_app.settings, orphan_scan_segments=13), swept_app.registry, swept_app.clients
    )
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    scanned = _record_scan_segments(app)
    event = {"source": "aws.events", "time": "2026-11-29T08:05:00Z"}

    # When the sweep handler runs for it
    handler.sweep(event, FakeLambdaContext())

    # Then it read the segment that minute names, of the configured 13
    minute = int(datetime(2026, 11, 29, 8, 5, tzinfo=UTC).timestamp()) // 60
    assert scanned == [(minute % 13, 13)]


def test_lease_comes_from_the_lambdas_remaining_time(swept_app: App) -> None:
    app = swept_app
    task = TaskRunnerClient(app).create_task("NOOP_TASK", {})
    before = int(utcnow().timestamp())
    claimed = app.store.claim_pending(
        task.id, source=ClaimSource.STREAM, lease_seconds=app.runner.lease_seconds(None, 42.0)
    )
    assert claimed.lease_expires_at is not None
    assert 42 <= claimed.lease_expires_at - before <= 42 + 30 + 2
