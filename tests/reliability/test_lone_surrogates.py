"""Text UTF-8 cannot carry (a lone surrogate: a str decoded with errors="surrogateescape",
such as a file name or a subprocess's output) anywhere a task's values go: refused with a
clear error, or written as `\\udcff`; never a UnicodeEncodeError out of a write that
leaves a task PROCESSING, nor a create that raises it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from runner.app import App
from runner.client import TaskRunnerClient
from runner.errors import InvalidTaskInput, PermanentTaskError, RetryableTaskError, TaskNotFound
from runner.model import ClaimSource, TaskStatus
from runner.registry import TaskDefinition, TaskRegistry
from tests.reliability.test_steps_and_payload_faults import _keys, payload_app

SURROGATE = b"report-\xff.csv".decode("utf-8", "surrogateescape")


class Text(BaseModel):
    text: str = ""


@pytest.fixture
def papp(aws: None, settings: Any, monkeypatch: pytest.MonkeyPatch) -> App:
    return payload_app(settings, monkeypatch)


def _register(app: App, task_type: str, handler: Any) -> None:
    registry = TaskRegistry(
        [*app.registry, TaskDefinition(type=task_type, input_model=Text, handler=handler)]
    )
    app.registry = app.runner.registry = registry


@pytest.mark.parametrize("size", [10, 100_000], ids=["inline", "offloaded"])
@pytest.mark.parametrize("known", [True, False], ids=["known type", "unknown type"])
def test_an_input_holding_a_lone_surrogate_is_refused_and_nothing_is_written(
    papp: App, size: int, known: bool
) -> None:
    _register(papp, "TEXT_TASK", lambda data, ctx: None)
    if not known:
        papp.registry = TaskRegistry([], complete=False)
    client = TaskRunnerClient(papp)
    with pytest.raises(InvalidTaskInput, match="not valid UTF-8 text"):
        client.create_task("TEXT_TASK", {"text": "x" * size + SURROGATE}, task_id="bad-input")
    with pytest.raises(TaskNotFound):
        papp.store.get("bad-input")
    assert _keys(papp) == []


def test_an_id_or_idempotency_key_holding_a_lone_surrogate_is_refused(papp: App) -> None:
    client = TaskRunnerClient(papp)
    with pytest.raises(ValueError, match="valid UTF-8 text"):
        client.create_task("NOOP_TASK", {}, task_id=SURROGATE)
    with pytest.raises(ValueError, match="valid UTF-8 text"):
        client.create_task("NOOP_TASK", {}, idempotency_key=SURROGATE)
    assert client.list_tasks()[0] == []


@pytest.mark.parametrize(
    "error", [PermanentTaskError, RetryableTaskError], ids=["permanent", "retryable"]
)
def test_an_error_message_holding_a_lone_surrogate_is_recorded(
    papp: App, error: type[Exception]
) -> None:
    def handler(data: Text, ctx: Any) -> None:
        raise error(f"cannot open {SURROGATE}")

    _register(papp, "RAISING_TASK", handler)
    task = TaskRunnerClient(papp).create_task("RAISING_TASK", {})
    outcome = papp.runner.run_pending(task.id, source=ClaimSource.STREAM)
    # Then the failure is recorded (not a UnicodeEncodeError leaving it PROCESSING), the
    # message kept, its lone surrogate written out
    stored = papp.store.get(task.id)
    assert stored.status is TaskStatus.FAILED
    assert outcome.error is not None and stored.error is not None
    assert stored.error.message == "cannot open report-\\udcff.csv"
    assert stored.attempt_log[-1].error is not None


def test_a_progress_message_holding_a_lone_surrogate_is_recorded(papp: App) -> None:
    def handler(data: Text, ctx: Any) -> dict[str, bool]:
        ctx.report_progress(1, total=2, message=f"reading {SURROGATE}")
        return {"ok": True}

    _register(papp, "PROGRESS_TEXT_TASK", handler)
    task = TaskRunnerClient(papp).create_task("PROGRESS_TEXT_TASK", {})
    outcome = papp.runner.run_pending(task.id, source=ClaimSource.STREAM)
    assert outcome.status is TaskStatus.DONE, outcome.error
    progress = papp.store.get(task.id).progress
    assert progress is not None
    assert progress.message == "reading report-\\udcff.csv"


def test_an_offloaded_result_holding_a_lone_surrogate_ends_failed_not_stuck(papp: App) -> None:
    _register(papp, "BIG_TEXT_TASK", lambda data, ctx: {"text": "x" * 100_000 + SURROGATE})
    task = TaskRunnerClient(papp).create_task("BIG_TEXT_TASK", {})
    outcome = papp.runner.run_pending(task.id, source=ClaimSource.STREAM)
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.retryable) == ("ResultNotStorable", False)
    assert "not valid UTF-8 text" in outcome.error.message
    assert papp.store.get(task.id).status is TaskStatus.FAILED
    assert _keys(papp) == []
