"""The pages that only read: the overview, the lists per status, search, a task, and
the fragments their pages poll."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from runner.dashboard.payloads import field_value, is_reference, payload_view, to_json
from runner.dashboard.reads import TaskView
from runner.errors import MalformedTask, StoreError, TaskNotFound
from runner.items import decode_cursor
from runner.model import TaskStatus

if TYPE_CHECKING:
    from runner.dashboard.app import Dashboard

# DynamoDB's limit on a partition key value: no task can have a longer id.
MAX_ID_BYTES = 2048
# What an action's redirect tells the page to say (a code, never free text from the URL).
NOTICES = {
    "retried": "Retry started: the new execution is below.",
    "cancelled": "Cancellation requested.",
    "created": "Task created.",
}


def routes(dashboard: Dashboard) -> list[Route]:
    def overview_context() -> dict[str, Any]:
        overview = dashboard.reads.overview()
        oldest = overview.oldest_pending
        age = 0.0
        if oldest is not None:
            created = _parse(oldest.created_at)
            age = (datetime.now(UTC) - created).total_seconds() if created else 0.0
        return {
            "overview": overview,
            "oldest_age": age,
            "cap": dashboard.settings.count_cap,
            "ttl": dashboard.settings.count_ttl_seconds,
            "counted_ago": time.monotonic() - overview.counted_at,
            "throughput": overview.throughput,
            "poll_seconds": dashboard.settings.overview_poll_seconds,
        }

    def overview(request: Request) -> Response:
        return dashboard.render(request, "overview.html", overview_context(), section="overview")

    def overview_live(request: Request) -> Response:
        return dashboard.render(request, "_overview_live.html", overview_context())

    def tasks(request: Request) -> Response:
        text = request.query_params.get("status") or None
        cursor = request.query_params.get("cursor") or None
        try:
            status = TaskStatus(text.upper()) if text else None
            if cursor:
                decode_cursor(cursor)
        except ValueError as exc:
            return dashboard.message(request, "Bad request", str(exc), status_code=400)
        try:
            found, next_cursor = dashboard.reads.page(status, cursor)
        except StoreError as exc:
            if cursor and not exc.transient:
                # A cursor that decodes but names positions the index refuses (edited,
                # or from another table): the request's fault
                return dashboard.message(
                    request,
                    "Bad request",
                    f"The table refused this page's cursor ({exc.code or exc}).",
                    status_code=400,
                    back="/tasks",
                )
            raise
        return dashboard.render(
            request,
            "tasks.html",
            {
                "tasks": found,
                "status": status.value if status else None,
                "statuses": [s.value for s in TaskStatus],
                "cursor": cursor,
                "next_cursor": next_cursor,
                "page_size": dashboard.settings.page_size,
            },
            section="tasks",
        )

    def search(request: Request) -> Response:
        task_id = (request.query_params.get("id") or "").strip()
        if not task_id:
            return dashboard.redirect("/tasks")
        if len(task_id.encode()) > MAX_ID_BYTES:
            return dashboard.message(
                request,
                "Bad request",
                f"A task id is at most {MAX_ID_BYTES} bytes (DynamoDB's limit for a key).",
                status_code=400,
                back="/tasks",
            )
        try:
            dashboard.reads.items.item(task_id)
        except TaskNotFound:
            return dashboard.message(
                request,
                "Not found",
                f"No task has the id {task_id!r}.",
                "Search looks for the exact id: DynamoDB finds an item by its key, not by"
                " part of it.",
                status_code=404,
                back="/tasks",
            )
        return dashboard.redirect(f"/task?{_query(task_id)}")

    def task_page(request: Request) -> Response:
        view = _load(request)
        if isinstance(view, Response):
            return view
        context = _task_context(dashboard, view)
        notice = NOTICES.get(request.query_params.get("done", ""))
        return dashboard.render(
            request, "task.html", {**context, "notice": notice}, section="tasks"
        )

    def task_live(request: Request) -> Response:
        view = _load(request)
        if isinstance(view, Response):
            return view
        if request.query_params.get("v") == view.version() and view.live:
            return Response(status_code=204)  # nothing changed: htmx swaps nothing
        return dashboard.render(request, "_task_live.html", _task_context(dashboard, view))

    def task_payload(request: Request) -> Response:
        if dashboard.settings.redact_data:
            return PlainTextResponse("hidden: the dashboard runs with --redact-data", 403)
        view = _load(request)
        if isinstance(view, Response):
            return view
        field = request.query_params.get("field", "")
        try:
            value = field_value(view.item, field)
        except (KeyError, StopIteration):
            return PlainTextResponse(f"the task has no payload {field!r}", 404)
        if is_reference(value):
            # Offloaded: read from the payload bucket with the dashboard's credentials
            # (PayloadOperatorPolicy), checked against the reference's sha256.
            from runner.errors import PayloadCorrupt, PayloadUnavailable

            try:
                value = dashboard.client.app.store.payloads.load(value)
            except PayloadCorrupt as exc:
                return PlainTextResponse(f"the payload object is gone or altered: {exc}", 410)
            except PayloadUnavailable as exc:
                return PlainTextResponse(f"the payload bucket did not answer: {exc}", 502)
        return PlainTextResponse(to_json(value), media_type="application/json")

    def _load(request: Request) -> TaskView | Response:
        task_id = request.query_params.get("id", "")
        if not task_id:
            return dashboard.message(
                request, "Bad request", "Which task? (?id=...)", status_code=400
            )
        try:
            return dashboard.reads.task(task_id)
        except TaskNotFound:
            return dashboard.message(
                request, "Not found", f"No task has the id {task_id!r}.", status_code=404
            )
        except (StoreError, MalformedTask) as exc:
            return dashboard.message(request, "Could not read the task", str(exc), status_code=502)

    return [
        Route("/", overview),
        Route("/overview/live", overview_live),
        Route("/tasks", tasks),
        Route("/search", search),
        Route("/task", task_page),
        Route("/task/live", task_live),
        Route("/task/payload", task_payload),
    ]


def _query(task_id: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"id": task_id})


def _parse(text: str) -> datetime | None:
    from runner.dashboard.app import parse_time

    return parse_time(text)


def _task_context(dashboard: Dashboard, view: TaskView) -> dict[str, Any]:
    from runner.dashboard.actions import task_actions

    redact = dashboard.settings.redact_data
    item = view.item
    result = None
    if "result" in item and item.get("status") == "DONE":
        result = payload_view(view.task_id, "result", item["result"], label="result", redact=redact)
    steps = [
        {
            **step,
            "view": payload_view(
                view.task_id,
                f"steps.{step.get('name', '')}",
                step.get("result"),
                label="step result",
                redact=redact,
            ),
        }
        for step in view.steps
    ]
    return {
        "view": view,
        "version": view.version(),
        "input": payload_view(
            view.task_id, "data", item.get("data", {}), label="input", redact=redact
        ),
        "result": result,
        "steps": steps,
        "actions": task_actions(dashboard, view),
        "poll_seconds": dashboard.settings.task_poll_seconds,
    }
