"""Durable steps and 5 MB payloads on the served local stack, through its endpoint: the
stream path, a workflow retry, the CLI's get-task --payloads and history."""

from __future__ import annotations

import hashlib
import json
import time

import pytest

from runner.payloads import is_reference
from tests.e2e.conftest import REPORT, ServedStack

pytestmark = pytest.mark.slow

MB = 1024 * 1024


def _client(stack: ServedStack):  # type: ignore[no-untyped-def]
    from runner.app import App
    from runner.client import TaskRunnerClient
    from runner.config import Settings

    return TaskRunnerClient(App.build(Settings.from_env(stack.env)))


def test_a_5_mb_input_and_result_on_the_stream_path_and_through_a_workflow_retry(
    local_stack: ServedStack,
) -> None:
    assert local_stack.env.get("TASK_RUNNER_PAYLOAD_BUCKET"), "make dev must export it"
    client = _client(local_stack)
    blob = "e" * (5 * MB)
    started = time.perf_counter()
    # Given two tasks with a 5 MB input and a 5 MB result, one failing its first attempt
    on_stream = client.create_task("BLOB_TASK", {"blob": blob, "result_bytes": 5 * MB})
    retried = client.create_task(
        "BLOB_TASK", {"blob": blob, "result_bytes": 5 * MB, "fail_times": 1}
    )
    assert is_reference(on_stream.data) and is_reference(retried.data)
    # Then the stream runs the first, the retry workflow the second, to DONE
    first = local_stack.wait_for(on_stream.id, {"DONE", "FAILED"}, timeout=60)
    stream_seconds = time.perf_counter() - started
    second = local_stack.wait_for(retried.id, {"DONE"}, timeout=90)
    assert (first["status"], first["attempts"]) == ("DONE", 1)
    assert second["attempts"] == 2 and second["executions"]
    digest = hashlib.sha256(blob.encode()).hexdigest()
    for task in (on_stream, retried):
        full = client.get_task(task.id, payloads=True)
        assert full.result["input_sha256"] == digest
        assert len(full.result["output"]) == 5 * MB
    REPORT.append(f"5 MB input + 5 MB result, create -> DONE on the stream: {stream_seconds:.2f} s")


def test_a_three_step_tasks_retry_skips_the_first_step_as_history_shows(
    local_stack: ServedStack,
) -> None:
    created = local_stack.run("python", "-m", "runner.cli", "create-task", "steps-task")
    assert created.returncode == 0, created.stderr
    task_id = json.loads(created.stdout)["id"]
    # (its first attempt ends FAILED, retryable, until the retry workflow runs it again)
    task = local_stack.wait_for(task_id, {"DONE"}, timeout=60)
    assert task["attempts"] == 2
    history = local_stack.run("python", "-m", "runner.cli", "history", task_id)
    assert history.returncode == 0, history.stderr
    steps = {s["name"]: s["attempt"] for s in json.loads(history.stdout)["steps"]}
    assert steps == {"reserve": 1, "charge": 2, "email": 2}
    # The second attempt returned reserve's recorded result: the one attempt 1 made
    assert task["result"]["steps"][0] == {"step": "reserve", "attempt": 1}


def test_get_task_payloads_shows_an_offloaded_input_in_full(local_stack: ServedStack) -> None:
    client = _client(local_stack)
    task = client.create_task("BLOB_TASK", {"blob": "g" * (100 * 1024)})
    local_stack.wait_for(task.id, {"DONE"}, timeout=60)
    plain = local_stack.run("python", "-m", "runner.cli", "get-task", task.id)
    assert plain.returncode == 0, plain.stderr
    assert is_reference(json.loads(plain.stdout)["data"])
    full = local_stack.run("python", "-m", "runner.cli", "get-task", task.id, "--payloads")
    assert full.returncode == 0, full.stderr
    assert json.loads(full.stdout)["data"]["blob"] == "g" * (100 * 1024)
