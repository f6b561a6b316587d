"""The dashboard when AWS or the data is not as expected: an execution Step Functions no
longer has or will not show, an item that is not a valid task in a list, throttled or
refused queries, a refused cursor, an id no table could hold, a poll that fails. Each
page still answers, says what it could not read, and shows the rest."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from botocore.exceptions import ClientError

from runner.dashboard.cache import TtlCache
from runner.items import encode_cursor
from runner.model import status_shard
from tests.dashboard.conftest import PREFIX, Served, serve
from tests.helpers import put_raw


def refuse(client: Any, operation: str, code: str, *, after: int = 0) -> Callable[[], None]:
    """Make `client`'s `operation` fail with AWS's `code` (after `after` calls succeed);
    returns the undo."""
    calls = [0]

    def fail(**_: Any) -> None:
        calls[0] += 1
        if calls[0] > after:
            raise ClientError({"Error": {"Code": code, "Message": "injected"}}, operation)

    name = f"before-call.{client.meta.service_model.service_name}.{operation}"
    client.meta.events.register(name, fail)
    return lambda: client.meta.events.unregister(name, fail)


def no_sleep(served: Served) -> None:
    for table in (served.reads.counter, served.reads.items, served.app.store):
        table._sleep = lambda _s: None
    served.app.workflow._sleep = lambda _s: None


def a_task_with_executions(served: Served, task_id: str, arns: list[str]) -> None:
    put_raw(
        served.app.clients.dynamodb,
        served.app.settings.table_name,
        {
            "id": task_id,
            "type": "NOOP_TASK",
            "status": "FAILED",
            "status_shard": status_shard(task_id, "FAILED"),
            "updated_at": "2026-12-01T00:00:00.000Z",
            "data": {},
            "retryable": True,
            "retries_exhausted": True,
            "executions": arns,
        },
    )


def test_an_execution_step_functions_no_longer_has_is_shown_as_such(served: Served) -> None:
    # Given a task whose execution's history Step Functions has deleted (90 days after
    # it closed), next to one it still has
    machine = served.app.settings.state_machine_arn
    sfn = served.app.clients.stepfunctions
    kept = sfn.start_execution(stateMachineArn=machine, name="kept", input="{}")["executionArn"]
    gone = machine.replace(":stateMachine:", ":execution:") + ":deleted-long-ago"
    a_task_with_executions(served, "old", [gone, kept])

    # Then its page answers, says so for the one, and shows the other
    page = served.browser().get("/task?id=old")
    assert page.status == 200, page.text
    assert "No longer available" in page.page
    assert "kept" in page.text and page.text.count('class="execution"') == 2


def test_an_execution_these_credentials_may_not_read_is_shown_as_such(served: Served) -> None:
    machine = served.app.settings.state_machine_arn
    sfn = served.app.clients.stepfunctions
    arn = sfn.start_execution(stateMachineArn=machine, name="denied", input="{}")["executionArn"]
    a_task_with_executions(served, "denied", [arn])
    no_sleep(served)
    undo = refuse(sfn, "DescribeExecution", "AccessDeniedException")
    try:
        page = served.browser().get("/task?id=denied")
    finally:
        undo()
    assert page.status == 200, page.text
    assert "Not readable with these credentials" in page.page
    # Not cached: once allowed, the history is there
    page = served.browser().get("/task?id=denied")
    assert "Not readable" not in page.page and "ExecutionStarted" in page.text


def test_a_task_page_asks_step_functions_for_no_execution_data(served: Served) -> None:
    machine = served.app.settings.state_machine_arn
    sfn = served.app.clients.stepfunctions
    arns = [
        sfn.start_execution(stateMachineArn=machine, name=f"e{n}", input="{}")["executionArn"]
        for n in range(3)
    ]
    a_task_with_executions(served, "three", arns)
    sent: list[tuple[str, dict[str, Any]]] = []

    def record(params: dict[str, Any], model: Any, **_: Any) -> None:
        sent.append((model.name, dict(params)))

    sfn.meta.events.register("provide-client-params.stepfunctions.*", record)
    try:
        assert served.browser().get("/task?id=three").status == 200
    finally:
        sfn.meta.events.unregister("provide-client-params.stepfunctions.*", record)
    names = sorted(name for name, _ in sent)
    assert names == ["DescribeExecution"] * 3 + ["GetExecutionHistory"] * 3
    for name, params in sent:
        if name == "GetExecutionHistory":
            assert params["includeExecutionData"] is False
        else:
            assert params["includedData"] == "METADATA_ONLY"


def test_an_item_that_is_not_a_task_is_a_row_of_its_own_in_the_list(served: Served) -> None:
    # Given a valid PENDING task and, in the same index, an item no model can read
    good = served.create("NOOP_TASK", {})
    put_raw(
        served.app.clients.dynamodb,
        served.app.settings.table_name,
        {
            "id": "broken",
            "type": "NOOP_TASK",
            "status": "PENDING",
            "status_shard": status_shard("broken", "PENDING"),
            "updated_at": "2026-12-01T00:00:00.000Z",
            "data": {},
            "attempts": "many",
        },
    )

    # Then the list shows both, the bad one said to be invalid, with a link to its page
    for url in ("/tasks?status=PENDING", "/tasks"):
        page = served.browser().get(url)
        assert page.status == 200, page.text
        assert good.id in page.text
        assert f'href="{PREFIX}/task?id=broken"' in page.text
        assert "not a valid task" in page.text
    # The CLI's listing stays strict
    from runner.errors import MalformedTask

    with pytest.raises(MalformedTask):
        served.client.list_tasks("PENDING")


def test_a_throttled_count_keeps_the_last_counts_marked_not_current(routed_app: Any) -> None:
    # Given an overview counted once (counts kept no time: each render counts again)
    served = serve(routed_app, count_ttl_seconds=0.0)
    served.create("NOOP_TASK", {})
    browser = served.browser()
    assert browser.get("/").status == 200

    # When the index throttles every query past the tenacity retries
    no_sleep(served)
    undo = refuse(served.app.clients.dynamodb, "Query", "ProvisionedThroughputExceededException")
    try:
        page = browser.get("/")
        fragment = browser.get("/overview/live")
    finally:
        undo()

    # Then the page and its polled fragment answer 200 with the last counts, said to be
    # not current and why
    for reply in (page, fragment):
        assert reply.status == 200, reply.text
        assert (
            "Not current" in reply.page and "ProvisionedThroughputExceededException" in reply.text
        )
        assert 'data-status="PENDING"' in reply.text


def test_before_any_count_a_refused_one_still_renders_the_page(served: Served) -> None:
    no_sleep(served)
    undo = refuse(served.app.clients.dynamodb, "Query", "AccessDeniedException")
    try:
        page = served.browser().get("/")
    finally:
        undo()
    assert (
        page.status == 200 and "Not current" in page.page and "AccessDeniedException" in page.text
    )


@pytest.mark.parametrize(
    "positions",
    [
        {"PENDING#00": {"id": {"N": "1"}}},  # a start key of another shape than the index's
        {"PENDING#00": "garbage"},
        {"PENDING#00": {"id": {"S": "a"}, "status_shard": {"S": "PENDING#00"}, "x": {"S": ""}}},
        {"": "end"},
    ],
)
def test_a_cursor_that_list_never_wrote_is_a_bad_request(
    served: Served, positions: dict[str, Any]
) -> None:
    reply = served.browser().get(f"/tasks?status=PENDING&cursor={encode_cursor(positions)}")
    assert reply.status == 400, reply.text
    assert "cursor" in reply.page


def test_a_cursor_the_table_refuses_is_a_bad_request(served: Served) -> None:
    # Well formed, but DynamoDB refuses it (here: injected, as AWS answers a start key
    # that is not in the index's key schema)
    good = encode_cursor({"PENDING#00": {"id": {"S": "a"}, "status_shard": {"S": "PENDING#00"}}})
    no_sleep(served)
    undo = refuse(served.app.clients.dynamodb, "Query", "ValidationException")
    try:
        reply = served.browser().get(f"/tasks?status=PENDING&cursor={good}")
    finally:
        undo()
    assert reply.status == 400, reply.text
    assert "refused this page's cursor" in reply.page


def test_an_id_no_table_can_hold_is_a_bad_request(served: Served) -> None:
    reply = served.browser().get("/search?id=" + "x" * 2049)
    assert reply.status == 400 and "2048 bytes" in reply.page


def test_a_read_aws_refuses_is_a_page_that_says_so_not_a_500(served: Served) -> None:
    task = served.create("NOOP_TASK", {})
    no_sleep(served)
    undo = refuse(served.app.clients.dynamodb, "GetItem", "ThrottlingException")
    try:
        page = served.browser().get(f"/task?id={task.id}")
        found = served.browser().get(f"/search?id={task.id}")
        payload = served.browser().get(f"/task/payload?id={task.id}&field=data")
    finally:
        undo()
    for reply in (page, found, payload):
        assert reply.status in (502, 503), reply.text
        assert "ThrottlingException" in reply.text and "injected" not in reply.text


def test_a_slow_count_does_not_hold_other_requests_when_a_last_value_exists() -> None:
    cache: TtlCache[int] = TtlCache(0.01)
    cache.get("k", lambda: 1)
    time.sleep(0.02)
    started, release = threading.Event(), threading.Event()

    def slow() -> int:
        started.set()
        release.wait(5)
        return 2

    worker = threading.Thread(target=lambda: cache.get("k", slow, stale_ok=True))
    worker.start()
    started.wait(5)
    began = time.monotonic()
    other = cache.get("k", lambda: 3, stale_ok=True)
    assert time.monotonic() - began < 1 and other.value == 1 and not other.fresh
    release.set()
    worker.join(5)
    assert cache.get("k", lambda: 4).value == 2
