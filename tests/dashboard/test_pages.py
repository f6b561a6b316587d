"""The pages over a real (moto) table: what they show, what they read (never a Scan),
and the actions, each through its confirmation."""

from __future__ import annotations

import dataclasses
import html
import json
import re
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from runner.app import App
from runner.dashboard.payloads import INLINE_PAYLOAD_CHARS, is_reference
from runner.items import serialize
from runner.model import status_shard
from tests.dashboard.conftest import PREFIX, Served, serve
from tests.helpers import put_raw


@pytest.fixture
def calls(served: Served) -> Iterator[Counter[str]]:
    """The DynamoDB operations the dashboard makes, by name."""
    seen: Counter[str] = Counter()

    def count(model: Any, **_: Any) -> None:
        seen[model.name] += 1

    events = served.app.clients.dynamodb.meta.events
    events.register("before-call.dynamodb.*", count)
    yield seen
    events.unregister("before-call.dynamodb.*", count)


def figure(page: str, status: str) -> str:
    match = re.search(
        rf'data-status="{status}">\s*<span class="label">{status}</span>\s*'
        r'<span class="figure" data-count="\d+">([^<]+)</span>',
        page,
    )
    assert match, page
    return match.group(1)


def test_the_overview_counts_the_non_final_statuses_from_the_index(
    served: Served, calls: Counter[str]
) -> None:
    # Given 3 PENDING tasks and one FAILED
    for _ in range(3):
        served.create("NOOP_TASK", {})
    served.failed()
    browser = served.browser()
    calls.clear()

    page = browser.get("/").text

    assert figure(page, "PENDING") == "3"
    assert figure(page, "PROCESSING") == "0"
    assert figure(page, "RETRYING") == "0"
    assert figure(page, "SCHEDULED") == "0"
    assert "oldest PENDING" in page
    # Only Queries of the index: 16 shards for each of 4 statuses, 16 for the oldest PENDING
    assert set(calls) == {"Query"}
    assert calls["Query"] == 16 * 4 + 16


def test_past_the_cap_a_count_says_at_least_and_reads_about_the_cap(
    routed_app: Any,
) -> None:
    served = serve(routed_app, count_cap=20)
    for _ in range(60):
        served.create("NOOP_TASK", {})

    counts = served.reads.counter.count(status_shard_status("PENDING"), 20)

    assert counts.at_least and 20 <= counts.count < 40
    page = served.browser().get("/").text
    assert figure(page, "PENDING") == f"≥ {counts.count}"


def test_below_the_cap_a_count_is_exact_even_when_shards_are_uneven(routed_app: Any) -> None:
    # Given 30 tasks, all in one shard of the index (ids chosen for it), and a cap of 40
    served = serve(routed_app, count_cap=40)
    ids = [f"t{n}" for n in range(2000) if status_shard(f"t{n}", "PENDING") == "PENDING#03"][:30]
    for task_id in ids:
        served.create("NOOP_TASK", {}, task_id=task_id)

    counts = served.reads.counter.count(status_shard_status("PENDING"), 40)

    # Then the shard with them gets the budget the empty ones left, and the count is exact
    assert (counts.count, counts.at_least) == (30, False)


def status_shard_status(name: str) -> Any:
    from runner.model import TaskStatus

    return TaskStatus(name)


def test_counts_are_cached_for_a_few_seconds(served: Served, calls: Counter[str]) -> None:
    browser = served.browser()
    browser.get("/")
    first = calls["Query"]
    browser.get("/")
    browser.get("/overview/live")
    assert calls["Query"] == first


def test_the_list_pages_by_cursor_and_no_page_scans(served: Served, calls: Counter[str]) -> None:
    made = {served.create("NOOP_TASK", {}).id for _ in range(30)}
    browser = served.browser()
    calls.clear()

    first = browser.get("/tasks?status=PENDING").text
    ids = set(re.findall(r'href="/d/test-prefix/task\?id=([^"]+)"', first))
    cursor = re.search(
        r'rel="next" href="/d/test-prefix/tasks\?status=PENDING&amp;cursor=([^"]+)"', first
    )
    assert cursor, "no next page"
    second = browser.get(f"/tasks?status=PENDING&cursor={cursor.group(1)}").text
    ids |= set(re.findall(r'href="/d/test-prefix/task\?id=([^"]+)"', second))

    assert ids == made
    for page in ("/", "/tasks", "/tasks?status=DONE", f"/task?id={min(made)}", "/new"):
        browser.get(page)
    assert "Scan" not in calls
    assert browser.get("/tasks?status=NOPE").status == 400


def test_search_finds_an_exact_id_and_says_plainly_when_there_is_none(served: Served) -> None:
    task = served.create("NOOP_TASK", {}, task_id="order:42/a b")
    browser = served.browser()

    found = browser.get("/search?id=order%3A42%2Fa+b")
    assert found.status == 303
    assert found.headers["location"] == f"{PREFIX}/task?id=order%3A42%2Fa+b"
    assert task.id in browser.get(found.headers["location"]).text
    missing = browser.get("/search?id=order")
    assert missing.status == 404
    assert "No task has the id" in missing.text


def test_a_task_page_shows_its_input_attempts_and_error(served: Served) -> None:
    task = served.failed()
    page = served.browser().get(f"/task?id={task.id}").page

    assert "ALWAYS_FAILING_TASK" in page
    assert '"reason": "boom"' in page
    assert "RetryableTaskError" in page and "retryable" in page
    assert f'href="{PREFIX}/task/retry?id=' in page  # FAILED: it can be retried
    assert 'hx-trigger="every' in page  # retryable and not exhausted: still live


def test_the_live_fragment_answers_204_until_something_changes(served: Served) -> None:
    task = served.create("NOOP_TASK", {})
    browser = served.browser()
    page = browser.get(f"/task?id={task.id}").text
    version = re.search(r'data-version="([0-9a-f]+)"', page)
    assert version

    assert browser.get(f"/task/live?id={task.id}&v={version.group(1)}").status == 204
    served.client.run_task(task.id)  # PENDING → PROCESSING → DONE
    fragment = browser.get(f"/task/live?id={task.id}&v={version.group(1)}")
    assert fragment.status == 200
    assert 'data-status="DONE"' in fragment.text
    assert "hx-trigger" not in fragment.text  # final: the page stops asking


def test_retry_goes_through_a_confirmation_and_starts_an_execution(served: Served) -> None:
    task = served.failed()
    browser = served.browser()

    confirm = browser.get(f"/task/retry?id={task.id}")
    assert confirm.status == 200 and "Retry task" in confirm.text
    assert served.client.get_task(task.id).status.value == "FAILED"  # a GET changes nothing

    done = browser.post("/task/retry", {"id": task.id, "csrf": served.csrf})
    assert done.status == 303
    page = browser.get(done.headers["location"]).text

    after = served.client.get_task(task.id)
    assert after.status.value == "RETRYING" and len(after.executions) == 1
    assert after.executions[0].rsplit(":", 1)[-1] in page
    assert "console.aws.amazon.com/states/home?region=us-east-1" in page
    assert "Retry started" in page


def test_retry_of_a_task_that_is_not_failed_is_refused_with_its_reason(served: Served) -> None:
    task = served.create("NOOP_TASK", {})
    reply = served.browser().post("/task/retry", {"id": task.id, "csrf": served.csrf})
    assert reply.status == 409
    assert "only a FAILED task can be retried" in reply.text


def test_create_a_task_from_the_form_its_model_makes(served: Served) -> None:
    browser = served.browser()
    types = browser.get("/new").text
    assert "SLEEP_TASK" in types and "EXAMPLE_TASK" in types

    form = browser.get("/new?type=SLEEP_TASK").text
    assert 'name="f.seconds"' in form and 'type="number"' in form

    # A value the model refuses comes back beside its field, and nothing is created
    bad = browser.post(
        "/new/confirm", {"__type": "SLEEP_TASK", "f.seconds": "-1", "csrf": served.csrf}
    )
    assert bad.status == 422 and "field-error" in bad.text
    assert served.client.list_tasks()[0] == []

    # A good one is shown for confirmation, then created
    good = browser.post(
        "/new/confirm", {"__type": "SLEEP_TASK", "f.seconds": "0.5", "csrf": served.csrf}
    )
    assert good.status == 200 and '"seconds": 0.5' in good.page
    data = re.search(r'name="__data" value="([^"]+)"', good.text)
    assert data
    created = browser.post(
        "/new/create",
        {"__type": "SLEEP_TASK", "__data": html.unescape(data.group(1)), "csrf": served.csrf},
    )
    assert created.status == 303
    (task,) = served.client.list_tasks()[0]
    assert task.type == "SLEEP_TASK" and task.data == {"seconds": 0.5}
    assert created.headers["location"].startswith(f"{PREFIX}/task?id={task.id}")


def test_a_large_payload_is_linked_not_inlined(served: Served) -> None:
    big = "x" * (INLINE_PAYLOAD_CHARS + 10)
    task = served.create("EXAMPLE_TASK", {"message": big})
    browser = served.browser()

    page = browser.get(f"/task?id={task.id}").text
    assert big not in page
    assert f'href="{PREFIX}/task/payload?id={task.id}&amp;field=data"' in page
    full = browser.get(f"/task/payload?id={task.id}&field=data")
    assert full.status == 200 and big in full.text
    assert browser.get(f"/task/payload?id={task.id}&field=nope").status == 404


def test_an_offloaded_payload_is_served_in_full_from_the_payload_bucket(routed_app: App) -> None:
    # Given a dashboard over a deployment with a payload bucket, and a task whose input
    # went there (over 16 KiB)
    routed_app.clients.s3.create_bucket(Bucket="payloads-dashboard")
    settings = dataclasses.replace(routed_app.settings, payload_bucket="payloads-dashboard")
    served = serve(App(settings, routed_app.clients, routed_app.registry))
    big = "y" * 40_000
    task = served.create("EXAMPLE_TASK", {"message": big})
    assert is_reference(served.app.store.get(task.id).data)
    browser = served.browser()

    # When its page and its payload link are opened
    page = browser.get(f"/task?id={task.id}").text
    full = browser.get(f"/task/payload?id={task.id}&field=data")

    # Then the page links it, and the link serves the whole input, not its reference
    assert big not in page
    assert f'href="{PREFIX}/task/payload?id={task.id}&amp;field=data"' in page
    assert full.status == 200 and json.loads(full.text) == {"message": big}

    # And an object that is gone says so, plainly
    for key in served.app.clients.s3.list_objects_v2(Bucket="payloads-dashboard")["Contents"]:
        served.app.clients.s3.delete_object(Bucket="payloads-dashboard", Key=key["Key"])
    gone = browser.get(f"/task/payload?id={task.id}&field=data")
    assert gone.status == 410 and "gone" in gone.text


def test_redact_data_hides_inputs_results_and_error_messages(routed_app: Any) -> None:
    served = serve(routed_app, redact_data=True)
    task = served.failed()
    browser = served.browser()

    page = browser.get(f"/task?id={task.id}").text
    assert "boom" not in page
    assert "hidden" in page
    assert "RetryableTaskError" in page  # what failed, not what it said
    assert browser.get(f"/task/payload?id={task.id}&field=data").status == 403


def test_progress_steps_and_a_cancel_request_show_when_the_item_has_them(served: Served) -> None:
    # Given an item with the attributes cancellation, progress and steps add
    item = {
        "id": "rich",
        "type": "NOOP_TASK",
        "status": "PROCESSING",
        "data": {},
        "status_shard": status_shard("rich", "PROCESSING"),
        "updated_at": "2026-12-01T00:00:00.000Z",
        "progress": {"done": 3, "total": 10, "message": "copying", "updated_at": "x"},
        "steps": {"charge": {"result": {"charge_id": "ch_1"}, "attempt": 1, "completed_at": "y"}},
        "cancel_requested": True,
    }
    put_raw(served.app.clients.dynamodb, served.app.settings.table_name, item)
    page = served.browser().get("/task?id=rich").text

    assert '<progress max="10" value="3">' in page and "copying" in page
    assert "charge" in page and "ch_1" in page
    assert "cancel requested" in page


def test_a_waiting_task_is_cancelled_from_its_page_and_then_offers_no_cancel(
    served: Served,
) -> None:
    task = served.create("NOOP_TASK", {})
    browser = served.browser()
    assert f"/task/cancel?id={task.id}" in browser.get(f"/task?id={task.id}").text
    assert browser.get(f"/task/cancel?id={task.id}").status == 200

    reply = browser.post("/task/cancel", {"id": task.id, "csrf": served.csrf})

    assert reply.status == 303
    assert served.client.get_task(task.id).status.value == "CANCELLED"
    assert "/task/cancel" not in browser.get(f"/task?id={task.id}").text


def test_cancel_is_not_offered_by_a_client_that_cannot_cancel(served: Served) -> None:
    task = served.create("NOOP_TASK", {})
    served.client.cancel_task = None  # type: ignore[assignment,method-assign]
    browser = served.browser()
    assert "/task/cancel" not in browser.get(f"/task?id={task.id}").text
    assert browser.get(f"/task/cancel?id={task.id}").status == 404


def test_an_item_that_is_not_a_task_is_still_shown(served: Served) -> None:
    put_raw(
        served.app.clients.dynamodb,
        served.app.settings.table_name,
        {"id": "odd", "type": "NOOP_TASK", "status": "WEIRD", "data": {}},
    )
    page = served.browser().get("/task?id=odd")
    assert page.status == 200 and "not a valid task" in page.text
    assert serialize  # the item went in as a user's AWS CLI would put it
