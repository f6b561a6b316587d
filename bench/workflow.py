"""2. AWS calls per task (botocore before-call hooks on the runner's own session) and
5. Step Functions state transitions per retry attempt (moto's executor, in-process).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bench.common import FakeLambdaContext, Figure, pending_item
from runner.local.motoserver import StreamReader
from runner.local.motoserver import create_tasks_table as create_table

SECTION_CALLS = "2. AWS calls per task"
SECTION_SFN = "5. Step Functions cost"
ACCOUNT = "123456789012"
RUN_TASK_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:runTask"
RUN_EXPORT_ARN = f"arn:aws:lambda:us-east-1:{ACCOUNT}:function:runExport"
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
READS = {"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"}
WRITES = {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems"}


class CallCounter:
    """Counts the runner's AWS calls, by service and operation, with botocore's before-call."""

    def __init__(self) -> None:
        self.calls: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, model: Any, **_: Any) -> None:
        with self._lock:
            self.calls[f"{model.service_model.service_name}:{model.name}"] += 1

    @contextmanager
    def measuring(self) -> Iterator[collections.Counter[str]]:
        """Yields a counter that, after the block, holds the calls made inside it."""
        before = self.calls.copy()
        delta: collections.Counter[str] = collections.Counter()
        yield delta
        delta.update(self.calls)
        delta.subtract(before)
        for key in [k for k, v in delta.items() if v <= 0]:
            del delta[key]


def dynamodb_split(calls: collections.Counter[str]) -> tuple[int, int]:
    writes = sum(v for k, v in calls.items() if k.split(":")[1] in WRITES)
    reads = sum(v for k, v in calls.items() if k.split(":")[1] in READS)
    return writes, reads


class Flow:
    """Table, retry state machine and App in moto, the runner's clients counted."""

    def __init__(self) -> None:
        import boto3
        import botocore.session

        import handler
        from runner.app import App
        from runner.aws import AwsClients
        from runner.config import Settings
        from runner.local.lambdas import LambdaDispatcher
        from runner.local.statemachine import load_definition
        from tasks import build_registry

        self.handler = handler
        admin = boto3.session.Session()
        self.dynamodb = admin.client("dynamodb", region_name="us-east-1")
        self.sfn = admin.client("stepfunctions", region_name="us-east-1")
        table = "bench-workflow"
        stream_arn = create_table(self.dynamodb, table)
        definition = load_definition(
            {"RunTaskFunctionArn": RUN_TASK_ARN, "ExportFunctionArn": RUN_EXPORT_ARN}
        )
        self.state_machine_arn = self.sfn.create_state_machine(
            name="task-runner-retry-bench",
            definition=definition,
            roleArn=f"arn:aws:iam::{ACCOUNT}:role/sfn",
        )["stateMachineArn"]
        self.counter = CallCounter()
        session = botocore.session.get_session()
        session.register("before-call", self.counter)
        settings = Settings(
            table_name=table, region="us-east-1", state_machine_arn=self.state_machine_arn
        )
        self.app = App.build(
            settings,
            build_registry(["runner.local.demo_tasks"]),
            AwsClients(settings, session=session),
        )
        self.stream = StreamReader(
            admin.client("dynamodbstreams", region_name="us-east-1"), stream_arn
        )
        self.dispatcher = LambdaDispatcher()
        self.dispatcher.register("runTask", handler.run_task, timeout_seconds=60)
        self.dispatcher.register("runExport", handler.run_export, timeout_seconds=60)

    def execution_name(self, task_id: str, episode: int) -> str:
        from runner.executions import execution_name

        created = self.app.store.get(task_id).created_at or ""
        return execution_name(task_id, created, episode)

    def insert(self, task_id: str, task_type: str, data: dict[str, Any]) -> None:
        self.dynamodb.put_item(
            TableName=self.app.settings.table_name, Item=pending_item(task_id, task_type, data)
        )

    def deliver(self, event_name: str) -> None:
        records = [r for r in self.stream.read() if r["eventName"] == event_name]
        if not records:
            return
        function = (
            self.handler.process_stream if event_name == "INSERT" else self.handler.route_failed
        )
        assert function({"Records": records}, FakeLambdaContext()) == {"batchItemFailures": []}

    def wait(self, execution_arn: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run: dict[str, Any] = self.sfn.describe_execution(executionArn=execution_arn)
            if run["status"] != "RUNNING":
                return run
            time.sleep(0.02)
        raise TimeoutError(f"execution {execution_arn} still running")

    def history(self, execution_arn: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"executionArn": execution_arn}
        while True:
            page = self.sfn.get_execution_history(**kwargs)
            events += page["events"]
            if not page.get("nextToken"):
                return events
            kwargs["nextToken"] = page["nextToken"]


def transitions(events: list[dict[str, Any]]) -> tuple[int, int, int]:
    """(state entries, Task retries, billed transitions) from an execution history.

    A Task state's retry is billed as a transition but adds no StateEntered event: it
    shows as one more scheduled invocation within the same entry.
    """
    entered = [e for e in events if e["type"].endswith("StateEntered")]
    task_entries = sum(1 for e in entered if e["type"] == "TaskStateEntered")
    scheduled = sum(1 for e in events if e["type"] in ("TaskScheduled", "LambdaFunctionScheduled"))
    retries = scheduled - task_entries
    return len(entered), retries, len(entered) + retries


def _run_paths(
    flow: Flow, attempt_counts: list[int]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    calls: dict[str, Any] = {}
    # Happy path: a NOOP task through the stream.
    flow.insert("happy", "NOOP_TASK", {})
    with flow.counter.measuring() as happy:
        flow.deliver("INSERT")
    calls["happy (stream)"] = happy
    # Permanent failure: invalid input, FAILED for good, no workflow.
    flow.insert("invalid", "EXAMPLE_TASK", {"message": ""})
    with flow.counter.measuring() as permanent:
        flow.deliver("INSERT")
    calls["permanent failure (stream)"] = permanent
    with flow.counter.measuring() as routed_nothing:
        flow.deliver("MODIFY")
    calls["routeFailed, nothing to route (per batch)"] = routed_nothing
    runs: list[dict[str, Any]] = []
    for attempts in attempt_counts:
        task_id = f"flaky-{attempts}"
        # FLAKY fails its first `fail_times` attempts; the stream's is the first.
        flow.insert(task_id, "FLAKY_TASK", {"fail_times": attempts})
        with flow.counter.measuring() as failed:
            flow.deliver("INSERT")
        with flow.counter.measuring() as routed:
            flow.deliver("MODIFY")
        arn = flow.sfn.list_executions(stateMachineArn=flow.state_machine_arn)["executions"]
        name = flow.execution_name(task_id, 1)
        execution = next(e["executionArn"] for e in arn if e["name"] == name)
        invocations_before = len(flow.dispatcher.invocations)
        with flow.counter.measuring() as retried:
            run = flow.wait(execution)
        invoked = len(flow.dispatcher.invocations) - invocations_before
        assert run["status"] == "SUCCEEDED", run
        entered, retries, billed = transitions(flow.history(execution))
        runs.append(
            {
                "workflow_attempts": invoked,
                "state_entries": entered,
                "task_retries": retries,
                "transitions": billed,
            }
        )
        if attempts == attempt_counts[0]:
            calls["retryable failure (stream)"] = failed
            calls["routeFailed, one failure"] = routed
            calls["retry path, per runTask attempt"] = collections.Counter(
                {k: v / invoked for k, v in retried.items()}
            )
    # Retries exhausted: the Catch marks the task FAILED through the state machine.
    flow.insert("doomed", "ALWAYS_FAILING_TASK", {})
    flow.deliver("INSERT")
    flow.deliver("MODIFY")
    doomed = next(
        e["executionArn"]
        for e in flow.sfn.list_executions(stateMachineArn=flow.state_machine_arn)["executions"]
        if e["name"] == flow.execution_name("doomed", 1)
    )
    done = flow.wait(doomed)
    entered, retries, billed = transitions(flow.history(doomed))
    calls["_exhausted"] = {"status": done["status"], "transitions": billed}
    return calls, runs


def run(quick: bool) -> list[Figure]:
    import logging

    from moto import mock_aws
    from moto.stepfunctions.parser.asl.component.common.retry import (
        jitter_strategy_decl,
        retrier_decl,
    )

    attempt_counts = [2, 3, 5] if quick else [2, 3, 5, 8]
    logging.getLogger("moto").setLevel(logging.CRITICAL)  # it logs each failed attempt
    sleeps: list[float] = []
    saved = (retrier_decl.time, jitter_strategy_decl.random.uniform)
    retrier_decl.time = types.SimpleNamespace(sleep=sleeps.append)  # retries instant
    jitter_strategy_decl.random.uniform = lambda a, b: b
    try:
        with mock_aws(config=MOTO_CONFIG):  # type: ignore[arg-type]
            flow = Flow()
            import runner.app

            original_get_app = runner.app.get_app
            runner.app.get_app = lambda: flow.app  # type: ignore[assignment]
            # FLAKY's budget raised so every run below ends DONE inside one episode.
            definition = flow.app.registry.get("FLAKY_TASK")
            flow.app.registry._by_type["FLAKY_TASK"] = dataclasses.replace(
                definition, max_attempts=max(attempt_counts) + 1
            )
            try:
                with flow.dispatcher.installed():
                    calls, runs = _run_paths(flow, attempt_counts)
            finally:
                runner.app.get_app = original_get_app  # type: ignore[assignment]
    finally:
        retrier_decl.time, jitter_strategy_decl.random.uniform = saved
    exhausted = calls.pop("_exhausted")
    figures: list[Figure] = []
    happy_writes, happy_reads = dynamodb_split(calls["happy (stream)"])
    figures.append(
        Figure(
            SECTION_CALLS,
            "happy path: DynamoDB writes / reads per task",
            happy_writes,
            "writes",
            reference=happy_reads,
            reference_name="reads",
            target="2 writes, 0 reads",
            passed=(happy_writes, happy_reads) == (2, 0),
            note="stream Lambda only; the producer's insert not counted",
            details={"calls": dict(calls["happy (stream)"])},
        )
    )
    for path, counted in calls.items():
        if path == "happy (stream)":
            continue
        writes, reads = dynamodb_split(counted)
        figures.append(
            Figure(
                SECTION_CALLS,
                f"{path}: all AWS calls",
                sum(counted.values()),
                "calls",
                note=", ".join(f"{k}={v:g}" for k, v in sorted(counted.items())) or "none",
                details={
                    "calls": dict(counted),
                    "dynamodb_writes": writes,
                    "dynamodb_reads": reads,
                },
            )
        )
    # Transitions against attempts: a least-squares line; slope 1 means one per attempt.
    xs = [r["workflow_attempts"] for r in runs]
    ys = [r["transitions"] for r in runs]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mean_x) ** 2 for x in xs
    )
    constant = mean_y - slope * mean_x
    exact = all(y == round(slope * x + constant) for x, y in zip(xs, ys, strict=True))
    figures.append(
        Figure(
            SECTION_SFN,
            "state transitions per retry attempt (slope)",
            slope,
            "per attempt",
            reference=constant,
            reference_name="constant (transitions at 0 attempts)",
            target="1 per attempt + constant",
            passed=abs(slope - 1.0) < 1e-9 and exact,
            note="; ".join(f"{r['workflow_attempts']} attempts -> {r['transitions']}" for r in runs)
            + f"; retries exhausted ({exhausted['status']}) -> {exhausted['transitions']}",
            details={"runs": runs, "exhausted": exhausted, "retrier_sleeps": sleeps},
        )
    )
    return figures
