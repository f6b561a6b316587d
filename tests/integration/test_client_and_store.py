"""TaskRunnerClient and TaskStore against moto's DynamoDB."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError
from pydantic import BaseModel, Field

import handler
from runner.app import App
from runner.client import TaskRunnerClient
from runner.context import TaskContext
from runner.errors import (
    InvalidTaskInput,
    ItemTooLarge,
    TaskConflict,
    TaskNotFound,
    UnknownTaskType,
)
from runner.model import ClaimSource, TaskStatus
from runner.registry import TaskDefinition
from tests.helpers import FakeLambdaContext, pending, put_raw, stream_record


def test_create_task_validates_before_writing(app: App) -> None:
    client = TaskRunnerClient(app)
    with pytest.raises(InvalidTaskInput, match="message"):
        client.create_task("example-task", {"message": ""})
    with pytest.raises(UnknownTaskType):
        client.create_task("nope", {})
    assert app.clients.dynamodb.scan(TableName=app.settings.table_name)["Count"] == 0
    task = client.create_task("EXAMPLE_TASK", {"message": "hi"})
    assert client.get_task(task.id).status is TaskStatus.PENDING


class _Aliased(BaseModel):
    id_: str = Field(alias="id")
    ratio: float = 1.0
    maybe: float | None = None


def _echo(data: _Aliased, ctx: TaskContext) -> dict[str, Any]:
    return {"id": data.id_, "ratio": data.ratio}


def test_create_task_stores_what_the_run_reads_back(app: App) -> None:
    # Given a type whose model has an aliased field and float fields
    app.registry.register(TaskDefinition(type="ALIASED_TASK", input_model=_Aliased, handler=_echo))
    client = TaskRunnerClient(app)

    # Then numbers JSON cannot hold are refused before anything is written
    for data in ({"id": "a", "ratio": "nan"}, {"id": "a", "maybe": float("-inf")}):
        with pytest.raises(InvalidTaskInput, match="is not a finite number"):
            client.create_task("ALIASED_TASK", data)
    assert app.clients.dynamodb.scan(TableName=app.settings.table_name)["Count"] == 0

    # And the aliased field is stored under its alias, so the run gets its value
    task = client.create_task("ALIASED_TASK", {"id": "abc", "ratio": 0.5})
    assert task.data == {"id": "abc", "ratio": 0.5, "maybe": None}
    assert app.runner.run_pending(task.id, source=ClaimSource.CLI).status is TaskStatus.DONE
    assert client.get_task(task.id).result == {"id": "abc", "ratio": 0.5}


def test_item_over_400kb_is_refused_with_a_clear_error(app: App) -> None:
    client = TaskRunnerClient(app)
    near = client.create_task("NOOP_TASK", {"note": "x" * 390_000})
    assert client.get_task(near.id).data["note"] == "x" * 390_000
    with pytest.raises(ItemTooLarge, match=r"limit is 409600 bytes"):
        client.create_task("NOOP_TASK", {"note": "x" * 410_000})


def test_duplicate_id_and_missing_task(app: App) -> None:
    client = TaskRunnerClient(app)
    client.create_task("NOOP_TASK", {}, task_id="same")
    with pytest.raises(TaskConflict, match="already exists"):
        client.create_task("NOOP_TASK", {}, task_id="same")
    with pytest.raises(TaskNotFound):
        client.get_task("absent")


def test_list_pages_newest_first_across_shards_without_repeats(app: App) -> None:
    client = TaskRunnerClient(app)
    created = [client.create_task("NOOP_TASK", {"note": str(n)}).id for n in range(45)]
    seen: list[str] = []
    stamps: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        tasks, cursor = client.list_tasks("PENDING", limit=10, cursor=cursor)
        seen += [t.id for t in tasks]
        stamps += [str(t.updated_at) for t in tasks]
        pages += 1
        if cursor is None:
            break
    assert pages == 5 and sorted(seen) == sorted(created) and len(seen) == 45
    # Newest first; tasks created in the same millisecond tie, in no particular order.
    assert stamps == sorted(stamps, reverse=True)
    assert stamps[0] == client.get_task(created[-1]).updated_at


def test_hand_inserted_task_is_processed_and_then_listed(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    values = put_raw(
        app.clients.dynamodb,
        app.settings.table_name,
        pending("by-hand", "EXAMPLE_TASK", {"message": "aws cli"}),
    )
    handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext())
    done, _ = TaskRunnerClient(app).list_tasks("DONE")
    assert [t.id for t in done] == ["by-hand"]
    assert done[0].created_at  # filled in at claim time


def test_run_task_refuses_a_task_that_is_not_pending(app: App) -> None:
    client = TaskRunnerClient(app)
    task = client.create_task("NOOP_TASK", {})
    assert client.run_task(task.id).status is TaskStatus.DONE
    with pytest.raises(TaskConflict, match="DONE"):
        client.run_task(task.id)


def _throttle_every_other(app: App, counts: dict[str, int]) -> None:
    """Answer every other DynamoDB call with a throttling error.

    In-process, moto still applies the write before the hook's answer wins: the runner
    sees what AWS shows when a reply is lost after the write, and must recognise its own
    claim (claim_token) instead of taking it for someone else's.
    """

    def before_send(request: Any, **kwargs: Any) -> Any:
        counts["calls"] += 1
        if counts["calls"] % 2:
            from botocore.awsrequest import AWSResponse

            counts["throttled"] += 1
            body = (
                b'{"__type":"com.amazonaws.dynamodb.v20120810#'
                b'ProvisionedThroughputExceededException","message":"slow down"}'
            )
            raw = type(
                "Raw",
                (),
                {"stream": lambda self, **k: iter([body]), "read": lambda self, *a, **k: body},
            )()
            return AWSResponse(
                request.url,
                400,
                {"x-amzn-ErrorType": "ProvisionedThroughputExceededException"},
                raw,
            )
        return None

    app.clients.dynamodb.meta.events.register("before-send.dynamodb", before_send)


def test_throttled_calls_are_retried_and_ambiguous_writes_recognised(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("runner.app.get_app", lambda: app)
    values = put_raw(
        app.clients.dynamodb, app.settings.table_name, pending("throttled", "NOOP_TASK", {})
    )
    counts = {"calls": 0, "throttled": 0}
    _throttle_every_other(app, counts)
    assert handler.process_stream({"Records": [stream_record(values)]}, FakeLambdaContext()) == {
        "batchItemFailures": []
    }
    assert counts["throttled"] >= 2, counts
    app.clients.dynamodb.meta.events.unregister("before-send.dynamodb")
    assert app.store.get("throttled").status is TaskStatus.DONE


def test_a_failed_condition_is_never_retried(app: App) -> None:
    client = TaskRunnerClient(app)
    task = client.create_task("NOOP_TASK", {})
    client.run_task(task.id)
    calls: list[str] = []
    app.clients.dynamodb.meta.events.register(
        "before-send.dynamodb.UpdateItem", lambda **kw: calls.append("update")
    )
    with pytest.raises(TaskConflict):
        app.store.claim_pending(
            task.id, source=__import__("runner.model").model.ClaimSource.CLI, lease_seconds=10
        )
    assert calls == ["update"]


def test_non_transient_errors_are_not_retried(app: App) -> None:
    from runner.aws import is_transient

    def client_error(code: str, status: int) -> ClientError:
        return ClientError(
            {
                "Error": {"Code": code, "Message": "m"},
                "ResponseMetadata": {"HTTPStatusCode": status},
            },
            "UpdateItem",
        )

    assert is_transient(client_error("ProvisionedThroughputExceededException", 400))
    assert is_transient(client_error("InternalServerError", 500))
    assert not is_transient(client_error("ConditionalCheckFailedException", 400))
    assert not is_transient(client_error("ValidationException", 400))
