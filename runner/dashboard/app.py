"""The dashboard as one ASGI application: the routes of `pages` and `actions`, the
templates with their filters, the vendored static files, all behind `security.Guard`."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from runner.dashboard.reads import DashboardReads
from runner.dashboard.security import Guard, csrf_token
from runner.dashboard.settings import DashboardSettings
from runner.errors import StoreError, WorkflowError

HERE = Path(__file__).resolve().parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"


@dataclass
class Dashboard:
    """What every route needs: the settings, the reads, the runner's client."""

    settings: DashboardSettings
    reads: DashboardReads
    client: Any  # runner.client.TaskRunnerClient
    templates: Jinja2Templates

    def render(
        self,
        request: Request,
        name: str,
        context: dict[str, Any],
        *,
        status_code: int = 200,
        section: str = "",
    ) -> Response:
        runner = self.client.app.settings
        base = {
            "csrf": csrf_token(self.settings.token),
            "read_only": self.settings.read_only,
            "redact": self.settings.redact_data,
            "table": runner.table_name,
            "where": runner.endpoint_url or runner.region,
            "local": runner.endpoint_url is not None,
            "section": section,
            "notice": None,
        }
        return self.templates.TemplateResponse(
            request, name, {**base, **context}, status_code=status_code
        )

    def redirect(self, path: str) -> Response:
        """303 to one of the dashboard's pages (`path` as the routes name it)."""
        return RedirectResponse(self.settings.prefix + path, status_code=303)

    def message(
        self, request: Request, title: str, *lines: str, status_code: int, back: str = "/"
    ) -> Response:
        return self.render(
            request,
            "message.html",
            {"title": title, "lines": list(lines), "back": back},
            status_code=status_code,
        )


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60} s"
    if seconds < 86400:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"


def _bytes(size: int) -> str:
    if size < 1024:
        return f"{size} B"
    if size < 1024 * 1024:
        return f"{size / 1024:.1f} KB"
    return f"{size / 1024 / 1024:.1f} MB"


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(str(text).replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _when(text: Any) -> str:
    """Any timestamp the pages show (the task's, Step Functions') in the task's format."""
    from runner.items import iso

    moment = parse_time(str(text)) if text else None
    return iso(moment) if moment else str(text or "")


def _took(pair: tuple[str | None, str | None]) -> str:
    start, end = (parse_time(p) for p in pair)
    if start is None or end is None:
        return ""
    return f"{(end - start).total_seconds():.2f} s"


def _static_versions() -> dict[str, str]:
    """A content hash per static file, so a changed file is never served from a cache."""
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()[:10]
        for p in STATIC_DIR.iterdir()
        if p.is_file()
    }


def make_templates(prefix: str) -> Jinja2Templates:
    """The templates; `prefix`: the path every page is under (`DashboardSettings.prefix`)."""
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    versions = _static_versions()
    env.globals["root"] = prefix  # every href is {{ root }}/...: macros see it too
    env.globals["static"] = lambda name: f"{prefix}/static/{name}?v={versions.get(name, '0')}"
    env.filters["duration"] = _duration
    env.filters["bytes"] = _bytes
    env.filters["thousands"] = lambda n: f"{int(n):,}"
    env.filters["took"] = _took
    env.filters["when"] = _when
    return Jinja2Templates(env=env)


def _aws_unavailable(dashboard: Dashboard, request: Request, exc: Exception) -> Response:
    """DynamoDB or Step Functions refused or throttled a read the page needs: a page that
    says so (503, so a poll's htmx keeps what it shows and the page marks it not
    current), never a bare 500. The text is the error code only, never AWS's message."""
    return dashboard.message(
        request,
        "AWS did not answer",
        str(exc),
        "The page is shown again once it does: reload in a moment.",
        status_code=503,
    )


def create_app(
    settings: DashboardSettings, client: Any, reads: DashboardReads | None = None
) -> Any:
    """The ASGI app for one dashboard process (`client`: a TaskRunnerClient)."""
    from runner.dashboard import actions, pages

    dashboard = Dashboard(
        settings=settings,
        reads=reads or DashboardReads(client.app, settings),
        client=client,
        templates=make_templates(settings.prefix),
    )
    routes = [
        *pages.routes(dashboard),
        *actions.routes(dashboard),
        Mount("/static", app=StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            StoreError: functools.partial(_aws_unavailable, dashboard),
            WorkflowError: functools.partial(_aws_unavailable, dashboard),
        },
    )
    app.state.dashboard = dashboard
    return Guard(app, settings)
