"""The actions: retry a FAILED task, cancel one (once the runner can), create a task of
any registered type. Each is a confirmation page (GET) and the change itself (POST,
behind the CSRF check), refused with `--read-only`; each then sends the browser to the
task's page, where the change shows."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from runner.dashboard.forms import form_fields, read_form
from runner.dashboard.payloads import to_json
from runner.dashboard.reads import TaskView
from runner.errors import ConfigurationError, TaskNotFound, TaskRunnerError, UnknownTaskType
from runner.model import TaskStatus

if TYPE_CHECKING:
    from runner.dashboard.app import Dashboard

# Statuses a cancel request applies to (the runner decides; this only offers the button):
# every status the model has but the ones a task is finished in (whatever issue 13 adds).
NOT_CANCELLABLE = frozenset({"DONE", "CANCELLED"})
CANCELLABLE = frozenset(s.value for s in TaskStatus) - NOT_CANCELLABLE
# The create form names a model's field f.<name>: never the form's own csrf, __type.
FIELD_PREFIX = "f."


@dataclass(frozen=True)
class Action:
    label: str
    url: str
    style: str = ""


def can_cancel(dashboard: Dashboard) -> bool:
    """Cancellation exists once the client has `cancel_task`."""
    return callable(getattr(dashboard.client, "cancel_task", None))


def task_actions(dashboard: Dashboard, view: TaskView) -> list[Action]:
    """The buttons a task's page offers now (none in read-only mode)."""
    if dashboard.settings.read_only or view.task is None:
        return []
    query = urlencode({"id": view.task_id})
    found: list[Action] = []
    if view.status == "FAILED":
        found.append(Action("Retry", f"/task/retry?{query}", "primary"))
    final_failure = view.status == "FAILED" and (
        view.item.get("retryable") is not True or view.item.get("retries_exhausted") is True
    )
    if (
        can_cancel(dashboard)
        and view.status in CANCELLABLE
        and not final_failure
        and not view.cancel_requested
    ):
        found.append(Action("Cancel", f"/task/cancel?{query}", "danger"))
    return found


def routes(dashboard: Dashboard) -> list[Route]:
    def read_only(request: Request) -> Response | None:
        if dashboard.settings.read_only:
            return dashboard.message(
                request,
                "Read-only",
                "This dashboard was started with --read-only: it shows tasks and changes none.",
                status_code=403,
            )
        return None

    def refused(request: Request, exc: TaskRunnerError, back: str) -> Response:
        code = 404 if isinstance(exc, TaskNotFound) else 409
        if isinstance(exc, ConfigurationError):
            code = 503
        return dashboard.message(request, "Not done", str(exc), status_code=code, back=back)

    async def form(request: Request) -> dict[str, str]:
        body = (await request.body()).decode("utf-8", "replace")
        return dict(parse_qsl(body, keep_blank_values=True))

    # --- retry -----------------------------------------------------------------------

    def retry_confirm(request: Request) -> Response:
        if (denied := read_only(request)) is not None:
            return denied
        task_id = request.query_params.get("id", "")
        try:
            view = dashboard.reads.task(task_id)
        except TaskNotFound as exc:
            return refused(request, exc, "/tasks")
        error = view.item.get("error") or {}
        return dashboard.render(
            request,
            "confirm.html",
            {
                "title": f"Retry task {task_id}?",
                "lines": [
                    f"It is {view.status}"
                    + (f" after {error.get('type')}" if error.get("type") else "")
                    + ". A retry moves it to RETRYING in a new failure episode and starts a new"
                    " execution of the retry state machine, which runs it again with backoff.",
                ],
                "action": "/task/retry",
                "hidden": {"id": task_id},
                "confirm_label": "Retry",
                "back": f"/task?{urlencode({'id': task_id})}",
                "detail": None,
            },
        )

    async def retry(request: Request) -> Response:
        if (denied := read_only(request)) is not None:
            return denied
        task_id = (await form(request)).get("id", "")
        back = f"/task?{urlencode({'id': task_id})}"
        try:
            await run_in_threadpool(dashboard.client.retry_task, task_id)
        except TaskRunnerError as exc:
            return refused(request, exc, back)
        dashboard.reads.forget()
        return dashboard.redirect(f"{back}&done=retried")

    # --- cancel ----------------------------------------------------------------------

    def cancel_confirm(request: Request) -> Response:
        if (denied := read_only(request)) is not None:
            return denied
        task_id = request.query_params.get("id", "")
        if not can_cancel(dashboard):
            return dashboard.message(
                request, "Not available", "This runner cannot cancel tasks.", status_code=404
            )
        return dashboard.render(
            request,
            "confirm.html",
            {
                "title": f"Cancel task {task_id}?",
                "lines": [
                    "A task not yet running ends CANCELLED at once; a retry waiting for its next"
                    " attempt ends CANCELLED and its execution is stopped; a running one is"
                    " asked to stop, and ends CANCELLED unless it finishes first.",
                ],
                "action": "/task/cancel",
                "hidden": {"id": task_id},
                "confirm_label": "Cancel the task",
                "back": f"/task?{urlencode({'id': task_id})}",
                "detail": None,
            },
        )

    async def cancel(request: Request) -> Response:
        if (denied := read_only(request)) is not None:
            return denied
        task_id = (await form(request)).get("id", "")
        back = f"/task?{urlencode({'id': task_id})}"
        if not can_cancel(dashboard):
            return dashboard.message(
                request, "Not available", "This runner cannot cancel tasks.", status_code=404
            )
        try:
            await run_in_threadpool(dashboard.client.cancel_task, task_id)
        except TaskRunnerError as exc:
            return refused(request, exc, back)
        dashboard.reads.forget()
        return dashboard.redirect(f"{back}&done=cancelled")

    # --- create ----------------------------------------------------------------------

    def new(request: Request) -> Response:
        if (denied := read_only(request)) is not None:
            return denied
        registry = dashboard.client.app.registry
        wanted = request.query_params.get("type")
        definition = None
        if wanted:
            try:
                definition = registry.get(wanted)
            except UnknownTaskType as exc:
                return refused(request, exc, "/new")
        return dashboard.render(
            request,
            "new.html",
            {
                "definitions": list(registry),
                "definition": definition,
                "fields": form_fields(definition.input_model) if definition else [],
                "errors": {},
                "values": {},
                "field_prefix": FIELD_PREFIX,
            },
            section="new",
        )

    async def new_confirm(request: Request) -> Response:
        if (denied := read_only(request)) is not None:
            return denied
        values = await form(request)
        try:
            definition = dashboard.client.app.registry.get(values.get("__type", ""))
        except UnknownTaskType as exc:
            return refused(request, exc, "/new")
        # The model's fields are named f.<name> in the form: a field called csrf or
        # __type must not collide with the form's own.
        fields = {
            k.removeprefix(FIELD_PREFIX): v for k, v in values.items() if k.startswith(FIELD_PREFIX)
        }
        result = read_form(definition.input_model, fields)
        if result.data is None:
            return dashboard.render(
                request,
                "new.html",
                {
                    "definitions": list(dashboard.client.app.registry),
                    "definition": definition,
                    "fields": form_fields(definition.input_model),
                    "errors": result.errors,
                    "values": result.values,
                },
                status_code=422,
                section="new",
            )
        return dashboard.render(
            request,
            "confirm.html",
            {
                "title": f"Create a {definition.type} task?",
                "lines": ["It is inserted as PENDING and runs at once, with this input:"],
                "detail": to_json(result.data),
                "action": "/new/create",
                "hidden": {"__type": definition.type, "__data": json.dumps(result.data)},
                "confirm_label": "Create",
                "back": f"/new?{urlencode({'type': definition.type})}",
            },
            section="new",
        )

    async def create(request: Request) -> Response:
        if (denied := read_only(request)) is not None:
            return denied
        values = await form(request)
        try:
            data = json.loads(values.get("__data", ""))
        except ValueError:
            return dashboard.message(
                request, "Bad request", "The form was altered.", status_code=400
            )
        try:
            task = await run_in_threadpool(
                dashboard.client.create_task, values.get("__type", ""), data
            )
        except TaskRunnerError as exc:  # invalid input, too large, an id that exists, ...
            return refused(request, exc, "/new")
        dashboard.reads.forget()
        return dashboard.redirect(f"/task?{urlencode({'id': task.id})}&done=created")

    return [
        Route("/task/retry", retry_confirm, methods=["GET"]),
        Route("/task/retry", retry, methods=["POST"]),
        Route("/task/cancel", cancel_confirm, methods=["GET"]),
        Route("/task/cancel", cancel, methods=["POST"]),
        Route("/new", new, methods=["GET"]),
        Route("/new/confirm", new_confirm, methods=["POST"]),
        Route("/new/create", create, methods=["POST"]),
    ]
