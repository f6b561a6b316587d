"""cancel-task, --wait, --follow and --idempotency-key as a shell script uses them: the
exit statuses (0 DONE, 2 FAILED, 3 CANCELLED, 4 not found, 124 timed out) and one line
on stderr for each refusal."""

from __future__ import annotations

import json

from tests.helpers import put_raw
from tests.integration.test_cli import cli, dynamodb, items, ok, one_error_line


def test_a_shell_script_can_branch_on_how_a_task_ended(server_env: dict[str, str]) -> None:
    env = server_env
    # DONE: 0, with the task's document on stdout
    done_id = ok(env, "create-task", "noop-task")["id"]
    ok(env, "run-task", "--task-id", done_id)
    waited = cli(env, "get-task", "--task-id", done_id, "--wait", "5")
    assert waited.returncode == 0 and json.loads(waited.stdout)["status"] == "DONE"

    # CANCELLED: 3
    cancelled_id = ok(env, "create-task", "noop-task")["id"]
    assert ok(env, "cancel-task", "--task-id", cancelled_id)["status"] == "CANCELLED"
    waited = cli(env, "get-task", cancelled_id, "--wait", "5")
    assert waited.returncode == 3 and json.loads(waited.stdout)["status"] == "CANCELLED"

    # FAILED for good: 2
    put_raw(
        dynamodb(env),
        env["AWS_DYNAMO_DB_TABLE_NAME"],
        {"id": "broken", "type": "NOOP_TASK", "status": "FAILED", "data": {}, "retryable": False},
    )
    waited = cli(env, "get-task", "broken", "--wait", "5")
    assert waited.returncode == 2 and json.loads(waited.stdout)["status"] == "FAILED"

    # Not found: 4, said plainly (with or without --wait)
    for args in (("get-task", "nope", "--wait", "1"), ("get-task", "nope")):
        assert "task nope not found" in one_error_line(cli(env, *args), 4)

    # Still PENDING when the wait ends: 124, naming the status
    pending_id = ok(env, "create-task", "noop-task")["id"]
    said = one_error_line(cli(env, "get-task", pending_id, "--wait", "0.3"), 124)
    assert f"timed out after 0.3 s: task {pending_id} is PENDING" in said


def test_create_task_wait_and_idempotency_key(server_env: dict[str, str]) -> None:
    env = server_env
    # --wait on create: nothing runs tasks here, so it times out, having created one
    said = one_error_line(cli(env, "create-task", "noop-task", "--note", "a", "--wait", "0.2"), 124)
    assert "is PENDING" in said and len(items(env)) == 1

    first = ok(env, "create-task", "noop-task", "--note", "a", "--idempotency-key", "order-42")
    again = ok(env, "create-task", "noop-task", "--note", "a", "--idempotency-key", "order-42")
    assert first["id"] == again["id"] and first["id"].startswith("key-")
    assert first["enqueue_key"] == "order-42" and len(items(env)) == 2

    other = cli(env, "create-task", "noop-task", "--note", "b", "--idempotency-key", "order-42")
    assert "'order-42' already names task" in one_error_line(other, 1)
    refused = cli(env, "create-task", "noop-task", "--wait", "-1")
    assert "--wait: input should be greater than or equal to 0" in one_error_line(refused, 64)


def test_cancel_task_refuses_a_finished_task_in_one_line(server_env: dict[str, str]) -> None:
    env = server_env
    task_id = ok(env, "create-task", "noop-task")["id"]
    ok(env, "run-task", "--task-id", task_id)

    said = one_error_line(cli(env, "cancel-task", "--task-id", task_id), 1)

    assert f"task {task_id} is DONE: it finished first; nothing to cancel" in said
    assert "task nope not found" in one_error_line(cli(env, "cancel-task", "nope"), 4)


def test_follow_prints_each_change_on_stderr(server_env: dict[str, str]) -> None:
    env = server_env
    task_id = ok(env, "create-task", "noop-task")["id"]
    ok(env, "run-task", "--task-id", task_id)

    followed = cli(env, "get-task", task_id, "--follow")

    assert followed.returncode == 0, followed.stderr
    assert json.loads(followed.stdout)["status"] == "DONE"
    assert f"{task_id}: DONE" in followed.stderr.splitlines()
