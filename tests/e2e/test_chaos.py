"""The hardening issue's invariants end to end, under the faults AWS has.

One stack (`serve --sweep-interval 2 --ttl-lag 0 --faults-seed N`), driven only through
its endpoint and its chaos control endpoint: each test turns a fault on, inserts tasks,
turns it off, and checks that every task ends final and none runs twice
(tests/e2e/invariants.py).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.conftest import REPORT, ServedStack, serve
from tests.e2e.invariants import client, get_task, put_task, violations, wait_final

pytestmark = pytest.mark.slow

SEED = 12
SWEEP_SECONDS = 2
# A crashed claim waits out its lease: EFFECT_TASK's 3 s timeout + the runner's 30 s grace,
# then a sweep, the routing and the retry.
CRASH_RECOVERY_SECONDS = 90


@pytest.fixture(scope="module")
def chaos() -> Iterator[ServedStack]:
    yield from serve(
        "--stage",
        "e2e",
        "--sweep-interval",
        str(SWEEP_SECONDS),
        "--ttl-lag",
        "0",
        "--faults-seed",
        str(SEED),
    )


@pytest.fixture
def faults_off(chaos: ServedStack) -> Iterator[ServedStack]:
    """Every test starts and ends with no fault active."""
    chaos.set_faults("")
    yield chaos
    chaos.set_faults("")


def ids(prefix: str, count: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"{prefix}-{run}-{n}" for n in range(count)]


def wait_injected(stack: ServedStack, fault: str, count: int = 1, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while stack.injected(fault) < count:
        assert time.monotonic() < deadline, (
            f"{fault} never fired: {stack.control('GET', '/faults')}, lambda "
            f"{stack.lambda_stats()}, stream {stack.control('GET', '/stream')}, output "
            + "\n".join(line for line in stack.output[-60:] if '"level"' not in line)
        )
        time.sleep(0.1)


def test_with_twenty_percent_dynamodb_throttling_every_task_ends_final_and_runs_once(
    faults_off: ServedStack,
) -> None:
    stack = faults_off
    # Given a fifth of every DynamoDB call throttled, the producer's and the runner's
    state = stack.set_faults("dynamodb.throttle=0.2")
    assert state["faults"] == ["dynamodb.throttle=0.2"] and state["seed"] == SEED
    tasks = ids("throttled", 30)
    started = time.monotonic()

    # When tasks are inserted and run
    for task_id in tasks:
        put_task(stack, task_id, "EFFECT_TASK", {})
    final = wait_final(stack, tasks, timeout=120)
    stack.set_faults("")

    # Then every one is DONE, and ran once
    throttled = stack.injected("dynamodb.throttle=0.2")
    REPORT.append(
        f"chaos: 30 tasks under 20% DynamoDB throttling ({throttled} throttled calls) "
        f"final in {time.monotonic() - started:.1f} s"
    )
    assert throttled > 0
    assert {t["status"] for t in final.values()} == {"DONE"}
    assert violations(stack, final, one_run_each=True) == []


def test_with_every_stream_batch_delivered_twice_no_task_runs_twice(
    faults_off: ServedStack,
) -> None:
    stack = faults_off
    stack.set_faults("stream.redeliver=1")
    effect_tasks, flaky_tasks = ids("twice", 20), ids("twice-flaky", 3)

    for task_id in effect_tasks:
        put_task(stack, task_id, "EFFECT_TASK", {})
    for task_id in flaky_tasks:  # their retries are routed through the same stream
        put_task(stack, task_id, "FLAKY_TASK", {"fail_times": 1})
    final = wait_final(stack, effect_tasks + flaky_tasks, timeout=90)
    redelivered = stack.injected("stream.redeliver=1")
    stack.set_faults("")

    assert redelivered > 0
    assert {t["status"] for t in final.values()} == {"DONE"}
    assert violations(stack, {i: final[i] for i in effect_tasks}, one_run_each=True) == []
    for task_id in flaky_tasks:  # one failure, one retry execution, one success
        assert final[task_id]["attempts"] == 2
        assert len(final[task_id]["executions"]) == 1


def test_with_replies_lost_after_writes_applied_and_invokes_throttled_tasks_run_once(
    faults_off: ServedStack,
) -> None:
    stack = faults_off
    # Given a third of the runner's UpdateItems applied but answered with a 500, and half
    # of the stream function's invocations refused (its concurrency "reached")
    lost, throttled = "dynamodb.UpdateItem.lost-reply=0.3", "lambda.processStream.throttle=0.5"
    stack.set_faults(f"{lost},{throttled}")
    tasks = ids("lost-reply", 20)

    for task_id in tasks:
        put_task(stack, task_id, "EFFECT_TASK", {})
    final = wait_final(stack, tasks, timeout=90)
    injected = (stack.injected(lost), stack.injected(throttled))
    stack.set_faults("")

    # Then a claim or an outcome whose reply was lost is recognised on retry (its claim
    # token), not taken for another worker's: every task DONE, each run once
    assert min(injected) > 0, injected
    assert {t["status"] for t in final.values()} == {"DONE"}
    assert violations(stack, final, one_run_each=True) == []
    assert {t["attempts"] for t in final.values()} == {1}


def test_a_lambda_killed_after_its_claim_or_before_its_final_write_is_recovered(
    faults_off: ServedStack,
) -> None:
    stack = faults_off
    after_claim, before_final = ids("crash-claimed", 1) + ids("crash-final", 1)

    # Given the stream function's environment killed right after a claim applied
    stack.set_faults("lambda.processStream.crash-after-claim=1x1")
    put_task(stack, after_claim, "EFFECT_TASK", {})
    wait_injected(stack, "lambda.processStream.crash-after-claim=1x1")
    # And another killed as it makes the write that would finish its task
    stack.set_faults("lambda.processStream.crash-before-final=1x1")
    put_task(stack, before_final, "EFFECT_TASK", {"steps": 2, "seconds": 0.2})
    wait_injected(stack, "lambda.processStream.crash-before-final=1x1")
    stack.set_faults("")
    crashes = stack.lambda_stats()["task-runner-e2e-processStream"]["crashes"]

    # When its lease runs out, the sweeper and the retry workflow take over
    final = wait_final(stack, [after_claim, before_final], timeout=CRASH_RECOVERY_SECONDS)

    # Then both are DONE; the first ran once (it died before its handler), the second
    # ran again, but never while the dead run could still act
    assert crashes >= 2
    assert {t["status"] for t in final.values()} == {"DONE"}
    assert violations(stack, final, one_run_each=False) == []
    assert violations(stack, {after_claim: final[after_claim]}, one_run_each=True) == []
    assert {e["attempt"] for e in _effects(stack, before_final)} == {1, 2}
    assert final[after_claim]["attempts"] == final[before_final]["attempts"] == 2


def _effects(stack: ServedStack, task_id: str) -> list[dict[str, object]]:
    from tests.e2e.invariants import effects

    return effects(stack, task_id)


def test_a_handler_past_its_timeout_runs_no_second_copy_while_the_first_can_act(
    faults_off: ServedStack,
) -> None:
    stack = faults_off
    # Given a sync handler that works 6 s, past its type's 3 s timeout
    (slow,) = ids("past-timeout", 1)
    put_task(stack, slow, "EFFECT_TASK", {"seconds": 6, "steps": 6})
    deadline = time.monotonic() + 30
    while get_task(stack, slow).get("attempts", 0) < 2:  # the retry has started
        assert time.monotonic() < deadline, get_task(stack, slow)
        time.sleep(0.2)

    # When the stream function is invoked again (its frozen environment thaws)
    (nudge,) = ids("nudge", 1)
    put_task(stack, nudge, "NOOP_TASK", {})
    final = wait_final(stack, [slow, nudge], timeout=60)
    time.sleep(2)

    # Then no attempt acted after a later one started
    assert violations(stack, {slow: final[slow]}, one_run_each=False) == []


def test_with_start_execution_down_for_a_while_every_task_ends_final(
    faults_off: ServedStack,
) -> None:
    stack = faults_off
    # Given Step Functions refusing StartExecution until routeFailed's mapping has given
    # up on a batch (its retries, each with the runner's own retries, spent: ~30 s)
    routing = "task-runner-e2e-routeFailed"
    discarded = stack.control("GET", "/stream")[routing]["discarded"]
    stack.set_faults("states.StartExecution.unavailable=1")
    tasks = ids("sfn-down", 4)
    for task_id in tasks:
        put_task(stack, task_id, "FLAKY_TASK", {"fail_times": 1})
    deadline = time.monotonic() + 120
    while stack.control("GET", "/stream")[routing]["discarded"] <= discarded:
        assert time.monotonic() < deadline, stack.control("GET", "/stream")
        time.sleep(0.5)
    stack.set_faults("")

    # Then, once it is back, every task still ends final (the sweeper repairs what the
    # routing gave up on), within the bound the README states
    final = wait_final(stack, tasks, timeout=45)
    assert {t["status"] for t in final.values()} == {"DONE"}
    assert violations(stack, final, one_run_each=False) == []


def test_ttl_deletions_reach_the_stream_as_the_services_and_the_functions_ignore_them(
    faults_off: ServedStack,
) -> None:
    stack = faults_off
    dynamodb = client(stack, "dynamodb")
    expired, deleted, too_old, not_a_number = ids("ttl", 4)
    now = int(time.time())
    items = {
        expired: {"N": str(now - 60)},
        deleted: {"N": str(now + 86400)},
        too_old: {"N": str(now - 6 * 365 * 86400)},  # AWS ignores values past five years
        not_a_number: {"S": str(now - 60)},
    }
    for task_id, expires in items.items():
        dynamodb.put_item(
            TableName=stack.table_name,
            Item={"id": {"S": task_id}, "status": {"S": "DONE"}, "expires_at": expires},
        )
    dynamodb.delete_item(TableName=stack.table_name, Key={"id": {"S": deleted}})

    # When TTL has run (lag 0)
    deadline = time.monotonic() + 15
    while get_task(stack, expired):
        assert time.monotonic() < deadline, "the expired item was never deleted"
        time.sleep(0.2)

    # Then its REMOVE carries the service's identity, and a DeleteItem's none
    removals = {r["dynamodb"]["Keys"]["id"]["S"]: r for r in _removes(stack, set(items))}
    assert removals[expired]["userIdentity"] == {
        "PrincipalId": "dynamodb.amazonaws.com",
        "Type": "Service",
    }
    assert "userIdentity" not in removals[deleted]
    assert get_task(stack, too_old) and get_task(stack, not_a_number)  # never deleted

    # And both stream functions, given that record as Lambda delivers it, do nothing
    record = dict(removals[expired])
    record["userIdentity"] = {"type": "Service", "principalId": "dynamodb.amazonaws.com"}
    record["dynamodb"] = {**record["dynamodb"], "ApproximateCreationDateTime": now}
    record["eventSourceARN"] = "arn:aws:dynamodb:us-east-1:123456789012:table/t/stream/x"
    lambdas = client(stack, "lambda")
    for function in ("processStream", "routeFailed"):
        reply = lambdas.invoke(
            FunctionName=f"task-runner-e2e-{function}",
            Payload=json.dumps({"Records": [record]}, default=str).encode(),
        )
        assert "FunctionError" not in reply
        assert json.loads(reply["Payload"].read()) == {"batchItemFailures": []}
    assert get_task(stack, expired) == {}


def _removes(stack: ServedStack, keys: set[str]) -> list[dict[str, Any]]:
    streams = client(stack, "dynamodbstreams")
    arn = client(stack, "dynamodb").describe_table(TableName=stack.table_name)["Table"][
        "LatestStreamArn"
    ]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    found = []
    while iterator:
        page = streams.get_records(ShardIterator=iterator, Limit=1000)
        found += [
            r
            for r in page["Records"]
            if r["eventName"] == "REMOVE" and r["dynamodb"]["Keys"]["id"]["S"] in keys
        ]
        if not page["Records"]:
            break
        iterator = page.get("NextShardIterator")
    return found


def test_the_served_dynamodb_is_atomic_and_sized_by_dynamodbs_rules(
    faults_off: ServedStack,
) -> None:
    from botocore.exceptions import ClientError

    stack = faults_off
    dynamodb = client(stack, "dynamodb")
    (task_id,) = ids("size", 1)
    # Given an item DynamoDB accepts although moto alone refuses it (over moto's 405,000)
    message = "x" * 409_000
    dynamodb.put_item(
        TableName=stack.table_name,
        Item={
            "id": {"S": task_id},
            "type": {"S": "NOOP_TASK"},
            "status": {"S": "PROCESSING"},
            "data": {"M": {"message": {"S": message}}},
        },
    )

    # When an update would take it past 400 KB
    with pytest.raises(ClientError, match="Item size to update has exceeded"):
        dynamodb.update_item(
            TableName=stack.table_name,
            Key={"id": {"S": task_id}},
            UpdateExpression="SET #s = :failed, #e = :error",
            ExpressionAttributeNames={"#s": "status", "#e": "error"},
            ExpressionAttributeValues={":failed": {"S": "FAILED"}, ":error": {"S": "e" * 1000}},
        )

    # Then nothing changed, as DynamoDB's UpdateItem is atomic
    task = get_task(stack, task_id)
    assert task["status"] == "PROCESSING" and "error" not in task


def test_a_timed_out_run_task_is_lambda_unknown_to_step_functions_and_retried(
    faults_off: ServedStack,
) -> None:
    # Last in the module: the timed-out attempt's lease keeps its task waiting long after.
    stack = faults_off
    stack.set_faults("lambda.runTask.timeout-after-claim=1x1")
    (task_id,) = ids("run-task-timeout", 1)
    put_task(stack, task_id, "FLAKY_TASK", {"fail_times": 1})
    wait_injected(stack, "lambda.runTask.timeout-after-claim=1x1")
    stack.set_faults("")

    # Then the execution saw Lambda.Unknown (a timed-out invocation), and its Retry ran
    # the task again
    sfn = client(stack, "stepfunctions")
    deadline = time.monotonic() + 20
    while not get_task(stack, task_id).get("executions"):
        assert time.monotonic() < deadline, get_task(stack, task_id)
        time.sleep(0.3)
    (arn,) = get_task(stack, task_id)["executions"]
    while True:
        events = sfn.get_execution_history(executionArn=arn)["events"]
        failed = [e for e in events if e["type"] == "TaskFailed"]
        scheduled = [e for e in events if e["type"] == "TaskScheduled"]
        if failed and len(scheduled) >= 2:
            break
        assert time.monotonic() < deadline, [e["type"] for e in events]
        time.sleep(0.3)
    first = failed[0]["taskFailedEventDetails"]
    assert first["error"] == "Lambda.Unknown"
    assert "Sandbox.Timedout" in first["cause"] and "Task timed out after" in first["cause"]
    assert stack.lambda_stats()["task-runner-e2e-runTask"]["timeouts"] == 1
