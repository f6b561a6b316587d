"""create-task --delay / --run-at from the command line, against a moto server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import boto3
import pytest

from tests.integration.test_cli import cli, items, ok, one_error_line


@pytest.fixture
def timer_env(server_env: dict[str, str]) -> dict[str, str]:
    sqs = boto3.client("sqs", endpoint_url=server_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    name = server_env["AWS_DYNAMO_DB_TABLE_NAME"] + "-timers"
    url = sqs.create_queue(QueueName=name)["QueueUrl"]
    return {**server_env, "TASK_RUNNER_TIMER_QUEUE_URL": url}


def test_delay_and_run_at_create_a_scheduled_task_with_its_timer(timer_env: dict[str, str]) -> None:
    later = ok(timer_env, "create-task", "noop-task", "--delay", "90")
    due = (datetime.now(UTC) + timedelta(minutes=10)).replace(microsecond=0)
    local = due.astimezone(timezone(timedelta(hours=1))).isoformat()  # ...T19:05:00+01:00
    then = ok(timer_env, "create-task", "noop-task", f"--run-at={local}")

    assert later["status"] == then["status"] == "SCHEDULED"
    assert then["run_at"] == due.strftime("%Y-%m-%dT%H:%M:%S.000Z")
    # No input field named delay or run_at: they are create-task's own
    assert later["data"] == then["data"] == {"note": ""}
    sqs = boto3.client("sqs", endpoint_url=timer_env["AWS_ENDPOINT_URL"], region_name="us-east-1")
    attributes = sqs.get_queue_attributes(
        QueueUrl=timer_env["TASK_RUNNER_TIMER_QUEUE_URL"],
        AttributeNames=["ApproximateNumberOfMessagesDelayed"],
    )["Attributes"]
    assert attributes["ApproximateNumberOfMessagesDelayed"] == "2"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--run-at", "2026-12-24T18:00:00"), "no time zone: add Z (UTC) or an offset"),
        (("--run-at", "tomorrow"), "--run-at"),
        (("--delay", "-5"), "greater than or equal to 0"),
        (("--delay", "nan"), "--delay"),
        (("--delay", "40000000"), "less than or equal to"),
    ],
)
def test_a_bad_delay_or_time_is_refused_and_creates_nothing(
    timer_env: dict[str, str], args: tuple[str, ...], says: str
) -> None:
    assert says in one_error_line(cli(timer_env, "create-task", "noop-task", *args), 64)
    assert items(timer_env) == []


def test_create_task_help_lists_the_delay_flags(timer_env: dict[str, str]) -> None:
    done = cli(timer_env, "create-task", "example-task", "--help")

    assert done.returncode == 0
    assert "--delay" in done.stdout and "--run-at" in done.stdout


def test_a_delayed_task_without_a_timer_queue_is_refused_in_one_line(
    server_env: dict[str, str],
) -> None:
    done = cli(server_env, "create-task", "noop-task", "--delay", "30")

    assert "TASK_RUNNER_TIMER_QUEUE_URL" in one_error_line(done, 1)
    assert items(server_env) == []


def test_list_schedules_without_its_group_names_the_variable(server_env: dict[str, str]) -> None:
    done = cli(server_env, "list-schedules")

    assert "TASK_RUNNER_RECURRING_SCHEDULE_GROUP" in one_error_line(done, 1)
