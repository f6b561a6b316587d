"""A task put over an existing id: PutItem replaces the item, and the stream calls that a
MODIFY. The replacing PENDING task is run, not left for the sweeper."""

from __future__ import annotations

from typing import Any

from runner.app import App
from runner.local import demo_tasks
from runner.model import TaskStatus
from tests.helpers import StreamReader, pending, put_raw


def reader_for(app: App) -> StreamReader:
    dynamodb = app.clients.dynamodb
    arn = dynamodb.describe_table(TableName=app.settings.table_name)["Table"]["LatestStreamArn"]
    return StreamReader(app.clients.client("dynamodbstreams"), arn)


def put(app: App, values: dict[str, Any]) -> None:
    put_raw(app.clients.dynamodb, app.settings.table_name, values)


def test_a_task_put_again_over_a_finished_one_runs(app: App) -> None:
    # Given a task that ran to DONE from its INSERT
    reader = reader_for(app)
    put(app, pending("again", "NOOP_TASK", {"note": "first"}))
    app.stream.process(reader.read())
    first = app.store.get("again")
    assert first.status is TaskStatus.DONE and first.result == {"note": "first"}
    reader.read()  # the claim's and the outcome's MODIFYs

    # When the same id is put again as PENDING (a MODIFY: DONE → PENDING)
    put(app, pending("again", "NOOP_TASK", {"note": "second"}))
    records = reader.read()
    assert [r["eventName"] for r in records] == ["MODIFY"]
    result = app.stream.process(records)

    # Then the new task is run, once, with its own data
    assert [o.status for o in result.outcomes] == [TaskStatus.DONE]
    second = app.store.get("again")
    assert second.status is TaskStatus.DONE and second.result == {"note": "second"}
    assert second.attempts == 1 and len(second.attempt_log) == 1
    assert demo_tasks.EFFECTS["task:again"] == 2


def test_only_a_change_to_pending_is_run(app: App) -> None:
    # Given the records of a task's life: insert, a re-put before the claim, claim, finish
    reader = reader_for(app)
    put(app, pending("life", "NOOP_TASK", {}))
    put(app, pending("life", "NOOP_TASK", {"note": "b"}))  # PENDING → PENDING, not yet claimed
    insert, pending_reput = reader.read()
    app.stream.process([insert])
    claim_and_finish = reader.read()
    assert [r["eventName"] for r in claim_and_finish] == ["MODIFY", "MODIFY"]

    # When they are delivered again, then nothing runs a second time
    result = app.stream.process([pending_reput, *claim_and_finish, insert])
    assert not result.outcomes or all(o.status is None for o in result.outcomes)
    assert demo_tasks.EFFECTS["task:life"] == 1
    assert app.store.get("life").attempts == 1


def test_a_task_put_again_counts_failure_episodes_on(app: App) -> None:
    # Given a finished task whose one failure had a retry execution (`fresh-1`)
    reader = reader_for(app)
    put(app, {**pending("fresh", "FLAKY_TASK", {"fail_times": 1}), "status": "DONE", "episode": 1})
    reader.read()

    # When a task that will fail once is put over it, and the stream runs it
    put(app, pending("fresh", "FLAKY_TASK", {"fail_times": 1}))
    result = app.stream.process(reader.read())

    # Then its retryable failure is episode 2, so its execution gets a new name
    assert [o.status for o in result.outcomes] == [TaskStatus.FAILED]
    failed = app.store.get("fresh")
    assert failed.retryable is True and failed.episode == 2
