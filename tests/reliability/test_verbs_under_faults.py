"""The control verbs, steps and payloads (issues 13, 14) under the faults an adversarial
review found: an in-process retry after a step, a throttled progress write, a refused
command line's exit status, run_task's answer after a lost claim, a timer message that
keeps failing, lone surrogates, a reused id's effect keys, a throttled wait, schedule
names that would share a logical id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel

from runner.app import App
from runner.errors import RetryableTaskError
from runner.items import iso
from runner.model import ClaimSource, Task, TaskStatus
from runner.registry import TaskDefinition, TaskRegistry


class Empty(BaseModel):
    pass


def _register(app: App, definition: TaskDefinition) -> None:
    app.runner.registry = TaskRegistry([*app.registry, definition])


def _put(app: App, task_id: str, task_type: str) -> None:
    now = iso(app.store.clock())
    app.store.put_new(Task(id=task_id, type=task_type, status=TaskStatus.PENDING, created_at=now))


def test_a_local_retry_after_a_step_is_not_a_permanent_failure(app: App) -> None:
    # Given a type with one in-process retry whose handler records a step, then fails
    # retryably once (a transient error after the effect)
    runs = {"charge": 0, "handler": 0}

    def handler(data: Empty, ctx: Any) -> dict[str, Any]:
        runs["handler"] += 1

        def charge() -> str:
            runs["charge"] += 1
            return "ch_1"

        charged = ctx.step("charge", charge)
        if runs["handler"] == 1:
            raise RetryableTaskError("mail server busy")
        return {"charged": charged}

    _register(
        app,
        TaskDefinition(
            type="LOCAL_RETRY_STEP_TASK",
            input_model=Empty,
            handler=handler,
            local_retries=1,
            local_retry_delay_seconds=0.0,
        ),
    )
    _put(app, "local-retry-step", "LOCAL_RETRY_STEP_TASK")
    # When it runs
    outcome = app.runner.run_pending("local-retry-step", source=ClaimSource.STREAM)
    # Then the in-process retry gets the recorded step back (not StepError "already used
    # in this attempt", a permanent failure) and the task is DONE, charged once
    assert outcome.error is None, outcome.error
    assert outcome.status is TaskStatus.DONE
    assert runs == {"charge": 1, "handler": 2}


def test_a_slow_progress_write_never_overwrites_a_later_report() -> None:
    import threading
    from datetime import UTC, datetime, timedelta

    from runner.progress import ProgressReporter

    # The item's `progress` attribute: each SET replaces it (the last write to land wins)
    stored: list[float] = []
    first_sent = threading.Event()
    release_first = threading.Event()

    def write(value: dict[str, Any]) -> None:
        if not stored and not first_sent.is_set():
            # The first write is throttled: the SDK retries it for a few seconds
            first_sent.set()
            release_first.wait(5)
        stored.append(value["done"])

    now = [0.0]
    wall = datetime(2026, 12, 1, tzinfo=UTC)
    reporter = ProgressReporter(
        write,
        clock=lambda: wall + timedelta(seconds=now[0]),
        monotonic=lambda: now[0],
        interval=5.0,
    )
    # Given a handler's first report, whose write is slow (the handler's thread sends it)
    handler = threading.Thread(target=reporter.report, args=(10, 100))
    handler.start()
    assert first_sent.wait(5)
    # and a later report, kept back, then written by the heartbeat's tick once due
    now[0] = 1.0
    reporter.report(100, 100, "all done")
    now[0] = 6.0
    reporter.flush_due()
    # When the first write's retry lands after it
    release_first.set()
    handler.join(5)
    # Then the task still shows the latest report (the handler ended: nothing more comes;
    # the final write has nothing left to carry)
    assert reporter.close() is None
    assert stored[-1] == 100, stored


def test_a_refused_command_line_does_not_exit_as_a_failed_task(
    server_env: dict[str, str],
) -> None:
    from runner.cli_control import EXIT_TASK_FAILED
    from tests.integration.test_cli import cli

    # A script branches on --wait's documented statuses: 2 means "the task FAILED"
    for args in (
        ("create-task", "noop-task", "--wait", "-1"),
        ("get-task", "--task-id", "x", "--wait", "5", "--no-such-flag"),
    ):
        refused = cli(server_env, *args)
        # Then a command line that was refused (nothing was created or waited for) is told
        # apart from a task that failed
        assert refused.returncode not in (0, EXIT_TASK_FAILED), (args, refused.returncode)


def test_run_tasks_answer_to_step_functions_is_bounded_when_its_claim_was_lost(
    app: App, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    import handler
    from runner.items import serialize
    from tests.helpers import FakeLambdaContext

    monkeypatch.setattr("runner.app.get_app", lambda: app)

    def loud(data: Empty, ctx: Any) -> None:
        if ctx.attempt == 1:
            raise RetryableTaskError("first attempt")
        # While the attempt runs its claim is taken over (its lease lapsed under throttled
        # heartbeats; the sweeper re-claimed it)
        app.clients.dynamodb.update_item(
            TableName=app.settings.table_name,
            Key=serialize({"id": "loud"}),
            UpdateExpression="SET claim_token = :other",
            ExpressionAttributeValues=serialize({":other": "someone-else"}),
        )
        # and the handler fails with a long message (an upstream error body it quotes)
        raise RetryableTaskError("upstream said: " + "x" * 1024 * 1024)

    _register(app, TaskDefinition(type="LOUD_TASK", input_model=Empty, handler=loud))
    _put(app, "loud", "LOUD_TASK")
    first = app.runner.run_pending("loud", source=ClaimSource.STREAM)
    assert first.status is TaskStatus.FAILED
    task = app.store.get("loud")
    # When the retry execution's attempt runs and its outcome finds the claim gone
    answer = handler.run_task(
        {
            "mode": "run",
            "task_id": "loud",
            "episode": task.episode,
            "task_type": "LOUD_TASK",
            "created_at": task.created_at,
        },
        FakeLambdaContext(),
    )
    # Then what goes back to Step Functions (the RunTask state's result, which counts
    # against its 256 KiB: States.DataLimitExceeded is caught by no Catch) is bounded
    # like every error run_task raises (8 KB)
    assert len(json.dumps(answer)) <= handler.ERROR_MESSAGE_MAX_BYTES + 1024, len(
        json.dumps(answer)
    )


def _resources() -> dict[str, Any]:
    from pathlib import Path

    import yaml

    class CfnLoader(yaml.SafeLoader):
        pass

    def any_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.ScalarNode):
            return loader.construct_scalar(node)
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node)
        return loader.construct_mapping(node)  # type: ignore[arg-type]

    CfnLoader.add_multi_constructor("!", any_tag)
    text = (Path(__file__).parents[2] / "infra" / "resources.yml").read_text()
    loaded: dict[str, Any] = yaml.load(text, Loader=CfnLoader)
    return dict(loaded["Resources"])


def test_a_timer_message_that_keeps_failing_is_dead_lettered(app: App) -> None:
    import json

    from runner.items import iso
    from runner.recurring import RecurringFires
    from runner.timer_inbox import TimerInbox

    # Given a recurring schedule's fire whose input the deployed model no longer accepts
    # (CloudFormation updated the function before the schedule's Input, or a bad edit)
    inbox = TimerInbox(app.store, app.delays, RecurringFires(app.store, app.registry))
    body = {
        "kind": "recurring",
        "schedule": "nightly",
        "task_type": "BLOB_TASK",
        "data": {"result_bytes": -1},
        "scheduled_time": iso(app.store.clock()),
    }
    report = inbox.handle([{"messageId": "m1", "body": json.dumps(body)}])
    # It is handed back to SQS (a failure, within its hour), so it comes back every
    # visibility timeout
    assert report.failed_message_ids == ("m1",)
    # Then the timer queue has a redrive policy (a dead-letter queue with its alarm): else
    # it cycles for the 14 days of MessageRetentionPeriod, and the schedule's runs are
    # lost with no alarm
    assert "RedrivePolicy" in _resources()["TimerQueue"]["Properties"]
    assert "TimerDeadLetterAlarm" in _resources()


def test_a_step_result_with_a_lone_surrogate_is_refused_as_not_storable(app: App) -> None:
    runs = {"effect": 0}

    def handler(data: Empty, ctx: Any) -> None:
        def effect() -> str:
            runs["effect"] += 1
            # A file name read with errors="surrogateescape": a str JSON cannot carry in UTF-8
            return b"report-\xff.csv".decode("utf-8", "surrogateescape")

        ctx.step("upload", effect)

    _register(app, TaskDefinition(type="SURROGATE_TASK", input_model=Empty, handler=handler))
    _put(app, "surrogate", "SURROGATE_TASK")
    outcome = app.runner.run_pending("surrogate", source=ClaimSource.STREAM)
    # Then, as for NaN, the step is refused for good (StepNotStorable), not failed retryably
    # with a UnicodeEncodeError so that every retry repeats the effect and fails again
    assert outcome.error is not None
    assert (outcome.error.type, outcome.error.retryable) == ("StepNotStorable", False)


def test_a_task_result_with_a_lone_surrogate_ends_failed_not_stuck(app: App) -> None:
    def handler(data: Empty, ctx: Any) -> dict[str, str]:
        return {"file": b"report-\xff.csv".decode("utf-8", "surrogateescape")}

    _register(app, TaskDefinition(type="SURROGATE_RESULT_TASK", input_model=Empty, handler=handler))
    _put(app, "surrogate-result", "SURROGATE_RESULT_TASK")
    try:
        outcome = app.runner.run_pending("surrogate-result", source=ClaimSource.STREAM)
    except Exception as exc:  # the outcome write itself blew up: the task stays PROCESSING
        pytest.fail(
            f"recording raised {type(exc).__name__}: {app.store.get('surrogate-result').status}"
        )
    # Then it ends FAILED for good with ResultNotStorable, as for NaN
    assert outcome.error is not None and outcome.error.type == "ResultNotStorable"


def test_a_key_reused_after_its_task_was_deleted_gets_new_effect_keys(app: App) -> None:
    from runner.client import TaskRunnerClient
    from runner.items import serialize

    seen: list[tuple[str, str]] = []

    def handler(data: Empty, ctx: Any) -> None:
        seen.append((ctx.idempotency_key, ctx.step_key("charge")))

    app.registry.register(TaskDefinition(type="KEYED_TASK", input_model=Empty, handler=handler))
    client = TaskRunnerClient(app)
    # Given a task created with an idempotency key, run, then deleted by TTL
    first = client.create_task("KEYED_TASK", {}, idempotency_key="order-42")
    app.runner.run_pending(first.id, source=ClaimSource.STREAM)
    app.clients.dynamodb.delete_item(
        TableName=app.settings.table_name, Key=serialize({"id": first.id})
    )
    # When the key is used again: a new task (the issue: its executions must not meet the
    # old task's; runner/idempotency.py says the same)
    app.store.clock = lambda: datetime.now(UTC) + timedelta(days=31)
    second = client.create_task("KEYED_TASK", {}, idempotency_key="order-42")
    assert second.created_at != first.created_at
    app.runner.run_pending(second.id, source=ClaimSource.STREAM)
    # Then its effects' idempotency keys are its own too: a payment API or a dedupe table
    # that remembers `ctx.idempotency_key` / `ctx.step_key` would otherwise skip the new
    # task's effects as duplicates of the old one's
    assert seen[0] != seen[1], seen


def test_a_wait_survives_one_read_that_fails_after_its_retries(app: App) -> None:
    from runner.errors import StoreError
    from runner.waiting import wait_for

    _put(app, "waited", "NOOP_TASK")
    reads = {"n": 0}

    class Throttled:
        """The app's store, whose second read fails after the SDK's retries (throttling)."""

        def find(self, task_id: str, *, timeout: float | None = None) -> Task | None:
            reads["n"] += 1
            if reads["n"] == 2:
                raise StoreError("GetItem failed: ProvisionedThroughputExceededException")
            if reads["n"] == 3:
                app.runner.run_pending(task_id, source=ClaimSource.STREAM)
            return app.store.find(task_id, timeout=timeout)

    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    # When a script waits 60 s for the task and one poll's read is throttled past its retries
    task = wait_for(Throttled(), "waited", 60, sleep=sleep, monotonic=lambda: now[0])  # type: ignore[arg-type]
    # Then the wait goes on polling (the timeout is the caller's bound) and returns DONE,
    # rather than ending `get-task --wait 60` with exit 1 while the task runs on
    assert task.status is TaskStatus.DONE


def test_two_recurring_schedules_never_share_a_logical_id() -> None:
    from runner.errors import RegistryError
    from runner.recurring import Recurring, schedule_resources

    # Given two schedules with distinct names (EventBridge keeps both) whose names differ
    # only in punctuation or the case of a word's first letter
    registry = TaskRegistry(
        [
            TaskDefinition(
                type="REPORT_TASK",
                input_model=Empty,
                handler=lambda data, ctx: None,
                schedules=(
                    Recurring("nightly-report", "cron(0 3 * * ? *)"),
                    Recurring("nightly_report", "cron(0 4 * * ? *)", timezone="Europe/Paris"),
                ),
            )
        ]
    )
    # When `sls package` asks for their resources
    with pytest.raises(RegistryError) as refused:
        schedule_resources(registry)
    # Then the pair is refused, naming both: not one silently overwritten, a schedule
    # that never runs with no error anywhere
    assert "nightly-report/nightly_report" in str(refused.value)
