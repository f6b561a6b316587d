"""Payloads and error sizes through the retry workflow (moto's Step Functions executor)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterator
from typing import Any

import pytest

from runner.attempts import WorkflowAttempts
from runner.client import TaskRunnerClient
from runner.errors import TaskRetryableError
from runner.model import TaskStatus
from runner.payloads import PayloadStore, is_reference
from tests.integration.test_workflow import Workflow, _build

BUCKET = "payloads-wf"
MB = 1024 * 1024


@pytest.fixture
def flow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Workflow]:
    for built in _build(monkeypatch, instant=True):
        app = built.app
        app.clients.s3.create_bucket(Bucket=BUCKET)
        settings = dataclasses.replace(app.settings, payload_bucket=BUCKET)
        app.store.payloads = PayloadStore(settings, app.clients)
        yield built


def _failure_causes(flow: Workflow) -> list[str]:
    sfn = flow.app.clients.stepfunctions
    causes = []
    for run in flow.executions():
        for event in sfn.get_execution_history(executionArn=run["executionArn"])["events"]:
            for key, details in event.items():
                if key.endswith("FailedEventDetails") and isinstance(details, dict):
                    causes.append(str(details.get("cause", "")))
    return causes


def test_a_5_mb_input_and_result_go_through_a_workflow_retry(flow: Workflow) -> None:
    blob = "w" * (5 * MB)
    # Given a task with a 5 MB input whose first attempt (on the stream) fails
    task = TaskRunnerClient(flow.app).create_task(
        "BLOB_TASK", {"blob": blob, "result_bytes": 5 * MB, "fail_times": 1}
    )
    assert is_reference(task.data)
    flow.pump()
    assert flow.app.store.get(task.id).status is TaskStatus.FAILED
    # When the retry workflow runs it again
    runs = flow.wait()
    # Then the retry saw the whole input, and its 5 MB result is on the task
    assert [r["status"] for r in runs] == ["SUCCEEDED"]
    full = TaskRunnerClient(flow.app).get_task(task.id, payloads=True)
    assert full.status is TaskStatus.DONE and full.attempts == 2
    assert full.result["input_sha256"] == hashlib.sha256(blob.encode()).hexdigest()
    assert len(full.result["output"]) == 5 * MB
    # And nothing the size of a payload went through Step Functions
    assert all(len(c) < 8 * 1024 for c in _failure_causes(flow))


def test_a_1_mb_error_message_is_cut_before_it_reaches_step_functions(
    flow: Workflow, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an attempt that raises with a 1 MB message (over Step Functions' 256 KiB)
    real = WorkflowAttempts.run
    calls: list[int] = []

    def loud(self: WorkflowAttempts, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise TaskRetryableError("m" * MB)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(WorkflowAttempts, "run", loud)
    flow.insert("loud", "FLAKY_TASK", {"fail_times": 1})
    flow.pump()
    # When the workflow retries it
    runs = flow.wait()
    # Then the error Step Functions saw was cut to 8 KB (the cause: the message, and the
    # stack trace the local dispatcher ends with it), and the retry went on
    causes = _failure_causes(flow)
    assert causes and max(len(c) for c in causes) < 20 * 1024
    cause = json.loads(max(causes, key=len))
    assert cause["errorType"] == "TaskRetryableError"
    assert len(cause["errorMessage"].encode()) <= 8 * 1024
    assert cause["errorMessage"].endswith("[cut]")
    assert [r["status"] for r in runs] == ["SUCCEEDED"]
    assert flow.app.store.get("loud").status is TaskStatus.DONE


def test_a_large_input_past_the_process_budget_runs_in_an_invocation_of_its_own(
    flow: Workflow,
) -> None:
    # Given a stream process already running large inputs up to its budget
    budget = flow.app.dispatcher.input_budget
    assert budget.try_take(budget.limit)
    task = TaskRunnerClient(flow.app).create_task("BLOB_TASK", {"blob": "h" * MB})
    # When the stream delivers another task with an offloaded input
    flow.pump()
    # Then it is not run there but handed to the workflow, whose runTask runs it
    runs = flow.wait()
    done = flow.app.store.get(task.id)
    assert done.status is TaskStatus.DONE and done.attempts == 1
    assert done.claimed_by is not None and done.claimed_by.value == "workflow"
    assert [r["status"] for r in runs] == ["SUCCEEDED"]
    budget.give_back(budget.limit)
    assert budget.held == 0
