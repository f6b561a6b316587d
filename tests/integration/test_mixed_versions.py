"""A deploy mixes versions, and no task is marked wrongly for it (I3, I4).

Executions started before a deploy keep the previous definition (UpdateStateMachine:
"running executions will continue to use the previous definition") and invoke the new
runTask; a routeFailed still warm during the deploy starts executions of the new
definition with the previous input. Both run here on moto's Step Functions executor:
the previous definition is `data/retry-previous.asl.json` (as released before issue 11).
"""

from __future__ import annotations

import json
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from moto import mock_aws

import handler
from runner.app import App
from runner.aws import AwsClients
from runner.config import Settings
from runner.errors import StoreError
from runner.items import utcnow
from runner.local import demo_tasks
from runner.local.lambdas import LambdaDispatcher
from runner.local.statemachine import load_definition
from runner.model import TaskStatus, status_shard
from runner.payloads import encoded_size
from tasks import build_registry
from tests.helpers import create_tasks_table, pending, put_raw

ACCOUNT = "123456789012"
RUN_TASK_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:runTask"
RUN_EXPORT_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:runExport"
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
PREVIOUS = Path(__file__).parent / "data" / "retry-previous.asl.json"
TABLE = "tasks-mixed"


@dataclass
class Machine:
    app: App
    arn: str
    slept: list[float]

    def run(self, name: str, execution_input: dict[str, Any]) -> dict[str, Any]:
        sfn = self.app.clients.stepfunctions
        arn = sfn.start_execution(
            stateMachineArn=self.arn, name=name, input=json.dumps(execution_input)
        )["executionArn"]
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found: dict[str, Any] = sfn.describe_execution(executionArn=arn)
            if found["status"] != "RUNNING":
                return found
            time.sleep(0.05)
        raise AssertionError("execution still running")


def _machine(monkeypatch: pytest.MonkeyPatch, definition: str) -> Iterator[Machine]:
    with mock_aws(config=MOTO_CONFIG):  # type: ignore[arg-type]
        settings = Settings(table_name=TABLE, region="us-east-1")
        clients = AwsClients(settings)
        create_tasks_table(clients.dynamodb, TABLE)
        arn = clients.stepfunctions.create_state_machine(
            name="task-runner-retry-test",
            definition=definition,
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/sfn",
        )["stateMachineArn"]
        settings = Settings(table_name=TABLE, region="us-east-1", state_machine_arn=arn)
        clients = AwsClients(settings)
        app = App.build(settings, build_registry(["runner.local.demo_tasks"]), clients)
        monkeypatch.setattr("runner.app.get_app", lambda: app)
        machine = Machine(app, arn, [])

        def sleep(seconds: float) -> None:  # the Retry's waits pass for the store too
            machine.slept.append(seconds)
            passed = sum(machine.slept)
            app.store.clock = lambda: utcnow() + timedelta(seconds=passed)

        from moto.stepfunctions.parser.asl.component.common.retry import retrier_decl

        monkeypatch.setattr(retrier_decl, "time", types.SimpleNamespace(sleep=sleep))
        dispatcher = LambdaDispatcher()
        dispatcher.register("runTask", handler.run_task, timeout_seconds=60)
        dispatcher.register("runExport", handler.run_export, timeout_seconds=60)
        with dispatcher.installed():
            yield machine


@pytest.fixture
def previous(monkeypatch: pytest.MonkeyPatch) -> Iterator[Machine]:
    text = PREVIOUS.read_text()
    text = text.replace("${RunTaskFunctionArn}", RUN_TASK_ARN).replace("${TasksTableName}", TABLE)
    yield from _machine(monkeypatch, text)


@pytest.fixture
def current(monkeypatch: pytest.MonkeyPatch) -> Iterator[Machine]:
    definition = load_definition(
        {"RunTaskFunctionArn": RUN_TASK_ARN, "ExportFunctionArn": RUN_EXPORT_ARN}
    )
    yield from _machine(monkeypatch, definition)


def _retrying(
    app: App, task_id: str, task_type: str = "NOOP_TASK", data: dict[str, object] | None = None
) -> None:
    """A task in its first retry episode, as the previous routeFailed left it."""
    put_raw(
        app.clients.dynamodb,
        TABLE,
        {
            **pending(task_id, task_type, data or {}),
            "status": "RETRYING",
            "episode": 1,
            "created_at": "2026-12-01T00:00:00.000Z",
            "updated_at": "2026-12-01T00:00:00.000Z",
        },
    )


def test_an_execution_of_the_previous_definition_never_marks_a_live_claim_exhausted(
    previous: Machine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an execution in flight across the deploy (the previous definition, its
    # input), whose attempt on the new runTask succeeds but whose final write is
    # throttled past its budget, leaving the claim PROCESSING under a live lease
    app = previous.app
    _retrying(app, "m")
    record = app.store.record_outcome
    throttled: list[int] = []

    def throttled_once(*args: Any, **kwargs: Any) -> Any:
        if not throttled:
            throttled.append(1)
            raise StoreError("DynamoDB update_item failed: ThrottlingException", transient=True)
        return record(*args, **kwargs)

    monkeypatch.setattr(app.store, "record_outcome", throttled_once)

    # When it runs to its end
    found = previous.run(
        "m-1", {"task_id": "m", "episode": 1, "failed_shard": status_shard("m", TaskStatus.FAILED)}
    )

    # Then its Catch never ran over the live claim: the attempt was retried as a held
    # lease until that lease had passed, and the task ran to DONE
    task = app.store.get("m")
    assert throttled == [1]
    assert task.status is TaskStatus.DONE, (task.status, task.retries_exhausted)
    assert not task.retries_exhausted
    assert found["status"] == "SUCCEEDED"
    assert task.expires_at is not None


def test_an_execution_of_the_previous_definition_ends_a_permanent_failure_as_it_did(
    previous: Machine,
) -> None:
    # Given an in-flight execution whose attempt fails for good (bad input)
    app = previous.app
    _retrying(app, "p", "EXAMPLE_TASK", {"unexpected": 1})

    # When it runs
    found = previous.run(
        "p-1", {"task_id": "p", "episode": 1, "failed_shard": status_shard("p", TaskStatus.FAILED)}
    )

    # Then the task is FAILED for good, not marked "retries exhausted" by the old Catch
    task = app.store.get("p")
    assert task.status is TaskStatus.FAILED and not task.retryable
    assert not task.retries_exhausted
    assert found["status"] == "SUCCEEDED"


def test_an_execution_of_the_previous_definition_ends_at_once_on_a_cancelled_task(
    previous: Machine,
) -> None:
    # Given an in-flight execution whose task was cancelled while it waited
    app = previous.app
    _retrying(app, "c")
    app.store.cancel_waiting(app.store.get("c"))

    # When it runs
    found = previous.run(
        "c-1", {"task_id": "c", "episode": 1, "failed_shard": status_shard("c", TaskStatus.FAILED)}
    )

    # Then it ends at once, succeeded (not after 20 TaskLeaseHeld retries a minute apart:
    # no Retry wait passed), and the task stays CANCELLED
    assert found["status"] == "SUCCEEDED", found
    assert previous.slept == []
    assert app.store.get("c").status is TaskStatus.CANCELLED


def test_the_current_definition_runs_an_execution_started_with_the_previous_input(
    current: Machine,
) -> None:
    # Given an execution started by a routeFailed of the previous version (warm during
    # the deploy) on the new definition: its input has no task_type or created_at
    app = current.app
    _retrying(app, "o")

    # When it runs
    found = current.run("o-1", {"task_id": "o", "episode": 1, "failed_shard": "FAILED#00"})

    # Then RunTask's paths resolve (no States.Runtime) and the task runs
    assert found["status"] == "SUCCEEDED", found
    assert app.store.get("o").status is TaskStatus.DONE


def test_an_execution_of_the_previous_definition_marks_exhausted_retries_with_an_expiry(
    previous: Machine,
) -> None:
    # Given an in-flight execution of a task that fails every attempt (2 allowed)
    app = previous.app
    _retrying(app, "x", "ALWAYS_FAILING_TASK")

    # When it runs out of attempts
    found = previous.run(
        "x-1", {"task_id": "x", "episode": 1, "failed_shard": status_shard("x", TaskStatus.FAILED)}
    )

    # Then runTask's exhaust write marked it (not the old native update): retries
    # exhausted, no claim token or lease left, and an expiry (I5)
    task = app.store.get("x")
    assert task.status is TaskStatus.FAILED and task.retries_exhausted
    assert task.claim_token is None and task.lease_expires_at is None
    assert task.expires_at is not None
    assert found["status"] == "SUCCEEDED"


def test_a_task_in_flight_across_the_deploy_keeps_the_effect_keys_it_had(
    previous: Machine,
) -> None:
    # Given a task in flight across the deploy: the previous version's runner made its
    # first attempt, which recorded step "reserve", then charged (`task:k:step:charge`
    # sent to the payment API) and died before recording it; its execution retries it
    app = previous.app
    reserved = {"step": "reserve", "attempt": 1}
    put_raw(
        app.clients.dynamodb,
        TABLE,
        {
            **pending("k", "STEPS_TASK", {"fail_at": 2, "fail_times": 2}),
            "status": "RETRYING",
            "attempts": 1,
            "episode": 1,
            "created_at": "2026-12-01T00:00:00.000Z",
            "updated_at": "2026-12-01T00:00:00.000Z",
            "steps": {
                "reserve": {
                    "completed_at": "2026-12-01T00:00:01.000Z",
                    "attempt": 1,
                    "bytes": encoded_size(reserved),
                    "result": reserved,
                }
            },
        },
    )
    demo_tasks.EFFECTS.update({"task:k:step:reserve": 1, "task:k:step:charge": 1})

    # When the new runTask makes its attempts (the charge fails once more, then passes)
    found = previous.run(
        "k-1", {"task_id": "k", "episode": 1, "failed_shard": status_shard("k", TaskStatus.FAILED)}
    )

    # Then every attempt gave its effects the keys the first one used (a payment API
    # keyed on them charges once), not keys of the task's incarnation: those would make
    # the retry repeat the first attempt's charge
    task = app.store.get("k")
    assert found["status"] == "SUCCEEDED"
    assert task.status is TaskStatus.DONE and task.attempts == 3
    assert demo_tasks.EFFECTS == {
        "task:k:step:reserve": 1,
        "task:k:step:charge": 3,
        "task:k:step:email": 1,
    }
    assert task.idempotency_key == "task:k"
