"""The heartbeat and progress writes against moto's DynamoDB: a lease extended up to its
deadline and never past it, the cancel flag read in the same write, the index entry left
alone, short tasks still two writes and no read, progress throttled and never fatal."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from runner.app import App
from runner.client import TaskRunnerClient
from runner.context import TaskContext
from runner.control import TaskControl
from runner.errors import StoreError
from runner.heartbeat import CLAIM_LOST, Heartbeat, LeasePolicy
from runner.model import ClaimSource, TaskStatus
from runner.registry import TaskDefinition

S = TaskStatus
T0 = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC)


class _Work(BaseModel):
    seconds: float = 0.0
    reports: int = 0


def _work(data: _Work, ctx: TaskContext) -> dict[str, Any]:
    for number in range(1, data.reports + 1):
        ctx.report_progress(number, data.reports, f"step {number}")
    time.sleep(data.seconds)
    return {"slept": data.seconds}


@pytest.fixture
def client(app: App) -> TaskRunnerClient:
    app.registry.register(
        TaskDefinition(type="WORK_TASK", input_model=_Work, handler=_work, timeout_seconds=60)
    )
    return TaskRunnerClient(app)


class _Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


def _claimed(app: App, client: TaskRunnerClient, lease: float) -> Any:
    task = client.create_task("WORK_TASK", {})
    return app.store.claim_pending(task.id, source=ClaimSource.STREAM, lease_seconds=lease)


def test_a_heartbeat_extends_the_lease_up_to_the_deadline_and_never_past_it(
    app: App, client: TaskRunnerClient
) -> None:
    clock = _Clock()
    app.store.clock = clock
    claimed = _claimed(app, client, lease=120)
    epoch = int(T0.timestamp())
    before = app.store.get_values(claimed.id)
    assert before is not None and claimed.lease_expires_at == epoch + 120
    beat = Heartbeat(
        app.store,
        claimed.id,
        claimed.claim_token,
        TaskControl(),
        lease=epoch + 120,
        cap=epoch + 630,  # the claim's deadline: a 600 s timeout plus the grace
        live_seconds=120,
    )

    seen = []
    for offset in (30, 60, 560, 600, 700):
        clock.now = T0 + timedelta(seconds=offset)
        assert beat.beat()
        seen.append(app.store.get(claimed.id).lease_expires_at - epoch)  # type: ignore[operator]

    # Each beat extends the lease by the live lease, until the deadline caps it
    assert seen == [150, 180, 630, 630, 630]
    after = app.store.get_values(claimed.id)
    assert after is not None
    # and no beat touched the status, its index entry or updated_at
    for name in ("status", "status_shard", "updated_at"):
        assert after[name] == before[name], name


def test_the_heartbeat_reads_the_cancel_flag_in_its_own_write(
    app: App, client: TaskRunnerClient
) -> None:
    claimed = _claimed(app, client, lease=300)
    control = TaskControl()
    beat = Heartbeat(
        app.store,
        claimed.id,
        claimed.claim_token,
        control,
        lease=claimed.lease_expires_at,
        cap=claimed.lease_expires_at,
        live_seconds=None,
    )
    assert beat.beat() and not control.cancel_requested
    client.cancel_task(claimed.id)
    assert beat.beat() and control.cancel_requested and not control.lost


def test_a_lost_claim_asks_the_handler_to_stop_and_in_lambda_ends_the_runtime(
    app: App, client: TaskRunnerClient
) -> None:
    claimed = _claimed(app, client, lease=120)
    # The item is gone (deleted, or put over): the claim's condition can never hold
    app.clients.dynamodb.delete_item(
        TableName=app.settings.table_name, Key={"id": {"S": claimed.id}}
    )
    ended: list[str] = []
    control = TaskControl()
    beat = Heartbeat(
        app.store,
        claimed.id,
        claimed.claim_token,
        control,
        lease=claimed.lease_expires_at,
        cap=claimed.lease_expires_at + 500,
        live_seconds=120,
        end_runtime=lambda reason: ended.append(reason) is None,
    )
    assert not beat.beat()
    assert control.cancel_requested and control.lost and control.reason == CLAIM_LOST
    assert ended and CLAIM_LOST in ended[0]


def _count_calls(app: App) -> dict[str, int]:
    counts: dict[str, int] = {}

    def count(event_name: str, **_: Any) -> None:
        operation = event_name.rsplit(".", 1)[-1]
        counts[operation] = counts.get(operation, 0) + 1

    app.clients.dynamodb.meta.events.register("before-call.dynamodb", count)
    return counts


def test_a_short_task_still_makes_two_writes_and_no_read(
    app: App, client: TaskRunnerClient
) -> None:
    task = client.create_task("WORK_TASK", {"seconds": 0.05})
    counts = _count_calls(app)

    assert app.runner.run_pending(task.id, source=ClaimSource.STREAM).status is S.DONE

    assert counts == {"UpdateItem": 2}


def test_a_long_task_beats_without_touching_its_index_entry(
    app: App, client: TaskRunnerClient
) -> None:
    app.runner.leases = LeasePolicy(heartbeat_seconds=0.1, live_lease_seconds=None)
    task = client.create_task("WORK_TASK", {"seconds": 0.65})
    counts = _count_calls(app)

    assert app.runner.run_pending(task.id, source=ClaimSource.STREAM).status is S.DONE

    # The claim, about six beats, the outcome; still no read
    assert set(counts) == {"UpdateItem"} and 6 <= counts["UpdateItem"] <= 10, counts


def test_progress_is_written_at_once_then_throttled_and_the_latest_wins(
    app: App, client: TaskRunnerClient
) -> None:
    app.runner.leases = LeasePolicy(progress_seconds=0.2, live_lease_seconds=None)
    writes: list[dict[str, Any]] = []
    original = app.store.write_progress

    def spy(task_id: str, *, token: str, progress: dict[str, Any], **kw: Any) -> bool:
        writes.append(progress)
        return original(task_id, token=token, progress=progress, **kw)

    app.store.write_progress = spy  # type: ignore[method-assign]
    # Five reports at once, then the handler sleeps past the interval
    task = client.create_task("WORK_TASK", {"reports": 5, "seconds": 0.5})

    assert app.runner.run_pending(task.id, source=ClaimSource.STREAM).status is S.DONE

    # The first report at once; the other four within the interval: only the latest,
    # when the interval ended
    assert [w["done"] for w in writes] == [1, 5]
    stored = client.get_task(task.id)
    assert stored.progress is not None
    assert (stored.progress.done, stored.progress.total, stored.progress.message) == (
        5,
        5,
        "step 5",
    )


def test_a_report_still_pending_goes_with_the_final_write(
    app: App, client: TaskRunnerClient
) -> None:
    task = client.create_task("WORK_TASK", {"reports": 3})  # ends within the 5 s interval

    assert app.runner.run_pending(task.id, source=ClaimSource.STREAM).status is S.DONE

    stored = client.get_task(task.id)
    assert stored.progress is not None and stored.progress.done == 3


def test_a_failed_progress_write_never_fails_the_task(app: App, client: TaskRunnerClient) -> None:
    def refused(task_id: str, *, token: str, progress: dict[str, Any], **kw: Any) -> bool:
        raise StoreError("DynamoDB update_item failed: ProvisionedThroughputExceededException")

    app.store.write_progress = refused  # type: ignore[method-assign]
    task = client.create_task("WORK_TASK", {"reports": 1})

    assert app.runner.run_pending(task.id, source=ClaimSource.STREAM).status is S.DONE


def test_bad_progress_values_are_a_clear_error(app: App, client: TaskRunnerClient) -> None:
    def bad(data: _Work, ctx: TaskContext) -> None:
        ctx.report_progress(float("nan"))

    app.registry.register(TaskDefinition(type="BAD_PROGRESS", input_model=_Work, handler=bad))
    task = client.create_task("BAD_PROGRESS", {})

    outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)

    assert outcome.error is not None and outcome.error.type == "ValueError"
    assert "runner/progress.py" in outcome.error.message


def test_any_real_number_is_a_progress_count(app: App, client: TaskRunnerClient) -> None:
    from decimal import Decimal
    from fractions import Fraction

    # A handler counting with Decimals or Fractions (numpy's numbers are int and float
    # subclasses, or registered as numbers.Integral)
    def counts(data: _Work, ctx: TaskContext) -> None:
        ctx.report_progress(Decimal("2.5"), Fraction(10, 1), "rows")

    app.registry.register(TaskDefinition(type="REAL_PROGRESS", input_model=_Work, handler=counts))
    task = client.create_task("REAL_PROGRESS", {})

    outcome = app.runner.run_pending(task.id, source=ClaimSource.STREAM)

    assert outcome.error is None, outcome.error
    progress = app.store.get(task.id).progress
    assert progress is not None and (progress.done, progress.total) == (2.5, 10)
