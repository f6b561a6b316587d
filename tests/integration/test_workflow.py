"""The retry workflow with moto's real Step Functions executor (execute_state_machine)."""

from __future__ import annotations

import json
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from moto import mock_aws

import handler
from runner.app import App
from runner.aws import AwsClients
from runner.config import Settings
from runner.local.lambdas import LambdaDispatcher
from runner.local.statemachine import load_definition
from runner.model import TaskStatus
from tasks import build_registry
from tests.helpers import FakeLambdaContext, StreamReader, create_tasks_table, pending, put_raw

ACCOUNT = "123456789012"
RUN_TASK_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:runTask"
RUN_EXPORT_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:runExport"
ARNS = {"RunTaskFunctionArn": RUN_TASK_ARN, "ExportFunctionArn": RUN_EXPORT_ARN}
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}


@dataclass
class Workflow:
    app: App
    stream: StreamReader
    dispatcher: LambdaDispatcher
    sleeps: list[float] = field(default_factory=list)

    def insert(self, task_id: str, task_type: str, data: dict[str, Any]) -> None:
        put_raw(
            self.app.clients.dynamodb,
            self.app.settings.table_name,
            pending(task_id, task_type, data),
        )

    def pump(self) -> None:
        """Deliver new stream records to both stream functions, as the mappings would."""
        records = self.stream.read()
        inserts = [r for r in records if r["eventName"] == "INSERT"]
        if inserts:
            handler.process_stream({"Records": inserts}, FakeLambdaContext())
        modifies = [r for r in records if r["eventName"] == "MODIFY"]
        if modifies:
            assert handler.route_failed({"Records": modifies}, FakeLambdaContext()) == {
                "batchItemFailures": []
            }

    def name(self, task_id: str, episode: int) -> str:
        """The execution name of one episode of a task, as the runner gives it."""
        from runner.executions import execution_name

        return execution_name(task_id, self.app.store.get(task_id).created_at or "", episode)

    def executions(self) -> list[dict[str, Any]]:
        sfn = self.app.clients.stepfunctions
        found: list[dict[str, Any]] = sfn.list_executions(
            stateMachineArn=self.app.settings.state_machine_arn
        )["executions"]
        return found

    def wait(self, timeout: float = 30.0) -> list[dict[str, Any]]:
        """Deliver stream records until every execution has finished and nothing is new."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.pump()
            runs = self.executions()
            if runs and all(r["status"] != "RUNNING" for r in runs):
                self.pump()
                if self.executions() == runs:
                    return runs
            time.sleep(0.05)
        raise AssertionError(f"executions still running: {self.executions()}")


def _build(monkeypatch: pytest.MonkeyPatch, *, instant: bool) -> Iterator[Workflow]:
    with mock_aws(config=MOTO_CONFIG):  # type: ignore[arg-type]
        settings = Settings(table_name="tasks-wf", region="us-east-1")
        clients = AwsClients(settings)
        stream_arn = create_tasks_table(clients.dynamodb, settings.table_name)
        definition = load_definition(ARNS)
        arn = clients.stepfunctions.create_state_machine(
            name="task-runner-retry-test",
            definition=definition,
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/sfn",
        )["stateMachineArn"]
        settings = Settings(table_name="tasks-wf", region="us-east-1", state_machine_arn=arn)
        clients = AwsClients(settings)
        app = App.build(settings, build_registry(["runner.local.demo_tasks"]), clients)
        monkeypatch.setattr("runner.app.get_app", lambda: app)
        flow = Workflow(
            app, StreamReader(clients.client("dynamodbstreams"), stream_arn), LambdaDispatcher()
        )
        if instant:
            from moto.stepfunctions.parser.asl.component.common.retry import (
                jitter_strategy_decl,
                retrier_decl,
            )

            # Full jitter draws the top of its range, so each delay shows the policy's cap.
            monkeypatch.setattr(jitter_strategy_decl.random, "uniform", lambda a, b: b)
            monkeypatch.setattr(
                retrier_decl, "time", types.SimpleNamespace(sleep=flow.sleeps.append)
            )
        flow.dispatcher.register("runTask", handler.run_task, timeout_seconds=60)
        flow.dispatcher.register("runExport", handler.run_export, timeout_seconds=60)
        with flow.dispatcher.installed():
            yield flow


@pytest.fixture
def flow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Workflow]:
    yield from _build(monkeypatch, instant=True)


@pytest.fixture
def realtime_flow(monkeypatch: pytest.MonkeyPatch) -> Iterator[Workflow]:
    yield from _build(monkeypatch, instant=False)


def test_fails_twice_then_succeeds_after_exactly_three_attempts(flow: Workflow) -> None:
    flow.insert("flaky", "FLAKY_TASK", {"fail_times": 2})
    flow.pump()
    assert flow.app.store.get("flaky").status is TaskStatus.FAILED
    runs = flow.wait()
    task = flow.app.store.get("flaky")
    assert task.status is TaskStatus.DONE
    assert task.attempts == 3
    assert [a.outcome for a in task.attempt_log] == [
        TaskStatus.FAILED,
        TaskStatus.RETRYING,
        TaskStatus.DONE,
    ]
    assert [r["name"] for r in runs] == [flow.name("flaky", 1)]
    assert runs[0]["status"] == "SUCCEEDED"
    assert task.executions == [runs[0]["executionArn"]]


def test_always_failing_task_ends_failed_with_retries_exhausted(flow: Workflow) -> None:
    flow.insert("doomed", "ALWAYS_FAILING_TASK", {})
    flow.pump()
    runs = flow.wait()
    task = flow.app.store.get("doomed")
    allowed = flow.app.registry.get("ALWAYS_FAILING_TASK").max_attempts
    assert task.status is TaskStatus.FAILED
    assert task.retries_exhausted is True
    assert task.attempts == 1 + allowed  # the stream's attempt, then the workflow's
    assert [r["status"] for r in runs] == ["FAILED"]
    # Listed under FAILED: the state machine wrote the index key too.
    failed, _ = flow.app.store.list(TaskStatus.FAILED)
    assert [t.id for t in failed] == ["doomed"]


def test_backoff_follows_the_policy(flow: Workflow) -> None:
    flow.insert("slow-luck", "FLAKY_TASK", {"fail_times": 3})
    flow.app.registry._by_type["FLAKY_TASK"] = __import__("dataclasses").replace(
        flow.app.registry.get("FLAKY_TASK"), max_attempts=5
    )
    flow.pump()
    flow.wait()
    asl = json.loads(load_definition(ARNS))
    policy = asl["States"]["RunTask"]["Retry"][0]
    expected = [
        min(policy["IntervalSeconds"] * policy["BackoffRate"] ** n, policy["MaxDelaySeconds"])
        for n in range(2)
    ]
    # Two retries (attempts 2→3 and 3→4): the delays double from IntervalSeconds.
    assert flow.sleeps == pytest.approx(expected)
    assert flow.app.store.get("slow-luck").status is TaskStatus.DONE


def test_permanent_failure_starts_no_execution(flow: Workflow) -> None:
    flow.insert("bad", "EXAMPLE_TASK", {"message": ""})
    flow.pump()
    flow.pump()
    assert flow.app.store.get("bad").status is TaskStatus.FAILED
    assert flow.executions() == []


def test_failed_record_delivered_twice_starts_one_execution(flow: Workflow) -> None:
    flow.insert("twice", "FLAKY_TASK", {"fail_times": 1})
    records = flow.stream.read()
    handler.process_stream({"Records": records}, FakeLambdaContext())
    modifies = [r for r in flow.stream.read() if r["eventName"] == "MODIFY"]
    for _ in range(2):
        handler.route_failed({"Records": modifies + modifies}, FakeLambdaContext())
    runs = flow.wait()
    assert [r["name"] for r in runs] == [flow.name("twice", 1)]
    assert flow.app.store.get("twice").executions == [runs[0]["executionArn"]]


def test_failures_inside_the_workflow_start_no_second_one(flow: Workflow) -> None:
    flow.insert("inner", "FLAKY_TASK", {"fail_times": 2})
    flow.pump()
    flow.wait()
    flow.pump()  # every record the workflow's attempts wrote, delivered again
    assert len(flow.executions()) == 1


def test_retry_task_redrives_an_exhausted_task_in_a_new_execution(flow: Workflow) -> None:
    from runner.client import TaskRunnerClient

    flow.insert("again", "ALWAYS_FAILING_TASK", {})
    flow.pump()
    flow.wait()
    assert flow.app.store.get("again").retries_exhausted
    redriven_at = time.time()
    outcome = TaskRunnerClient(flow.app).retry_task("again")
    assert outcome["episode"] == 2
    runs = flow.wait()
    assert sorted(r["name"] for r in runs) == sorted([flow.name("again", 1), flow.name("again", 2)])
    task = flow.app.store.get("again")
    assert task.status is TaskStatus.FAILED and task.retries_exhausted and task.episode == 2
    assert len(task.executions) == 2
    # Exhausted again, it still expires: a full TTL from the redrive on
    ttl = flow.app.settings.result_ttl_days * 86400
    assert task.expires_at is not None and task.expires_at >= int(redriven_at) + ttl - 1


def test_retry_task_refuses_a_task_that_is_not_failed(flow: Workflow) -> None:
    from runner.client import TaskRunnerClient
    from runner.errors import TaskConflict

    flow.insert("fine", "NOOP_TASK", {})
    flow.pump()
    with pytest.raises(TaskConflict, match="only a FAILED task"):
        TaskRunnerClient(flow.app).retry_task("fine")
    assert flow.executions() == []


def test_short_run_in_real_time(realtime_flow: Workflow) -> None:
    started = time.monotonic()
    realtime_flow.insert("live", "FLAKY_TASK", {"fail_times": 1})
    realtime_flow.pump()
    realtime_flow.wait(timeout=20)
    elapsed = time.monotonic() - started
    task = realtime_flow.app.store.get("live")
    assert task.status is TaskStatus.DONE and task.attempts == 2
    print(f"real-time retry: DONE after {elapsed:.2f} s")
