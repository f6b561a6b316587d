"""Who may talk to the dashboard: the Host check, the token and its cookie, CSRF, the
response headers, read-only mode. In front of a bare app, then of the real dashboard."""

from __future__ import annotations

from typing import Any

import pytest

from runner.dashboard.security import Guard, csrf_token
from runner.dashboard.settings import DashboardSettings
from runner.errors import ConfigurationError
from tests.dashboard.asgi import Browser
from tests.dashboard.conftest import PORT, PREFIX, TOKEN, Served, serve

CALLS: list[str] = []


async def echo(scope: Any, receive: Any, send: Any) -> None:
    """A bare app that records what reached it."""
    message = await receive()
    CALLS.append(f"{scope['method']} {scope['path']} {message.get('body', b'').decode()}")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.fixture
def guarded() -> Browser:
    CALLS.clear()
    return Browser(
        Guard(echo, DashboardSettings(port=PORT, token=TOKEN, prefix=PREFIX)), prefix=PREFIX
    )


def test_every_request_needs_the_token_reads_and_static_files_included(guarded: Browser) -> None:
    for path in ("/", "/task?id=x", "/static/htmx.min.js", "/tasks"):
        reply = guarded.get(path)
        assert reply.status == 401, path
        assert "open the URL it printed" in reply.text
    assert guarded.get("/?token=wrong" + "x" * 40).status == 401
    assert CALLS == []


def test_the_printed_url_sets_a_strict_cookie_and_drops_the_token_from_the_url(
    guarded: Browser,
) -> None:
    # Given the URL the dashboard printed
    reply = guarded.get(f"/task?id=a%20b&token={TOKEN}")

    # Then the browser is sent to the same page without the token, with a cookie
    assert reply.status == 303
    assert reply.headers["location"] == f"{PREFIX}/task?id=a+b"
    cookie = reply.headers["set-cookie"]
    assert cookie.startswith(f"task_runner_dashboard_{PORT}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    # Scoped to the dashboard's random path (cookies ignore ports: a server on another
    # port of this host must not receive it), and holding a session id, not the token
    assert f"Path={PREFIX};" in cookie
    session = guarded.cookies[f"task_runner_dashboard_{PORT}"]
    assert TOKEN not in cookie and len(session) >= 32
    stranger = Browser(guarded.app, prefix=PREFIX)
    assert stranger.get("/", headers={"authorization": f"Bearer {session}"}).status == 401
    # And the cookie alone lets it in from then on (the routes see the path without the
    # prefix)
    assert guarded.get("/tasks").status == 200
    assert CALLS == ["GET /tasks "]


def test_nothing_is_served_outside_the_random_prefix(guarded: Browser) -> None:
    guarded.get(f"/?token={TOKEN}")
    bearer = {"authorization": f"Bearer {TOKEN}"}
    for path in ("/", "/tasks", "/static/htmx.min.js", "/d/", "/d/other/tasks", PREFIX + "x/"):
        assert guarded.get(path, headers=bearer, outside=True).status == 404, path
    # Not even the login: a URL without the prefix cannot start a session
    assert guarded.get(f"/?token={TOKEN}", outside=True).status == 404
    assert CALLS == []


def test_each_login_starts_its_own_session_and_an_unknown_one_is_refused(
    guarded: Browser,
) -> None:
    guarded.get(f"/?token={TOKEN}")
    first = dict(guarded.cookies)
    guarded.get(f"/?token={TOKEN}")
    assert guarded.cookies != first
    other = Browser(guarded.app, prefix=PREFIX, cookies=first)
    assert other.get("/tasks").status == 200  # the earlier session still works
    forged = Browser(
        guarded.app, prefix=PREFIX, cookies={f"task_runner_dashboard_{PORT}": "x" * 43}
    )
    assert forged.get("/tasks").status == 401


def test_a_same_name_cookie_tossed_in_front_does_not_lock_the_operator_out(
    guarded: Browser,
) -> None:
    # A page elsewhere on this host set a cookie of the same name with a narrower Path:
    # the browser sends it first
    guarded.get(f"/?token={TOKEN}")
    name = f"task_runner_dashboard_{PORT}"
    real = guarded.cookies[name]
    header = {"cookie": f"{name}=tossed; {name}={real}"}
    assert guarded.get("/tasks", headers=header).status == 200


@pytest.mark.parametrize(
    ("path", "location"),
    [
        # a path that is not latin-1 once decoded: the raw (encoded) path is used
        ("/%E2%82%AC", "/%E2%82%AC"),
        # a path that would name a host if it came first: it never does (the prefix)
        ("//evil.example/", "//evil.example/"),
    ],
)
def test_the_login_redirect_keeps_the_raw_path_under_the_prefix(
    guarded: Browser, path: str, location: str
) -> None:
    reply = guarded.get(f"{path}?token={TOKEN}")
    assert reply.status == 303
    assert reply.headers["location"] == PREFIX + location


def test_a_websocket_is_refused() -> None:
    import asyncio

    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "websocket.connect"}

    reached: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope)

    guard = Guard(app, DashboardSettings(port=PORT, token=TOKEN, prefix=PREFIX))
    scope = {"type": "websocket", "path": PREFIX + "/", "headers": [(b"host", b"127.0.0.1:8600")]}
    asyncio.run(guard(scope, receive, send))
    assert reached == [] and sent == [{"type": "websocket.close", "code": 1008}]


def test_a_bearer_token_works_for_scripts(guarded: Browser) -> None:
    assert guarded.get("/", headers={"authorization": f"Bearer {TOKEN}"}).status == 200
    assert guarded.get("/", headers={"authorization": "Bearer nope"}).status == 401
    # A script's POST carries no ambient credential: no CSRF token needed
    reply = guarded.post("/x", {"a": "1"}, headers={"authorization": f"Bearer {TOKEN}"})
    assert reply.status == 200


@pytest.mark.parametrize(
    "host",
    ["evil.example:8600", "evil.example", "127.0.0.1:9999", "127.0.0.2:8600", "", "localhost"],
)
def test_a_host_that_is_not_the_dashboards_is_refused_even_with_the_token(
    guarded: Browser, host: str
) -> None:
    # DNS rebinding: evil.example re-pointed at 127.0.0.1 still sends its own name
    guarded.host = host
    reply = guarded.get("/", headers={"authorization": f"Bearer {TOKEN}"})
    assert reply.status == 403
    assert CALLS == []


@pytest.mark.parametrize("host", ["127.0.0.1:8600", "localhost:8600", "[::1]:8600"])
def test_the_loopback_names_with_its_port_are_accepted(guarded: Browser, host: str) -> None:
    guarded.host = host
    assert guarded.get("/", headers={"authorization": f"Bearer {TOKEN}"}).status == 200


def test_a_change_needs_the_csrf_token_and_the_dashboards_origin(guarded: Browser) -> None:
    guarded.get(f"/?token={TOKEN}")
    csrf = csrf_token(TOKEN)

    # Without the CSRF token, or with another's: refused, and nothing reaches the app
    assert guarded.post("/task/retry", {"id": "t"}).status == 403
    assert guarded.post("/task/retry", {"id": "t", "csrf": csrf_token("other" * 10)}).status == 403
    # From another origin or site, even with the token
    assert (
        guarded.post(
            "/task/retry", {"id": "t", "csrf": csrf}, headers={"origin": "http://evil.example"}
        ).status
        == 403
    )
    assert (
        guarded.post(
            "/task/retry", {"id": "t", "csrf": csrf}, headers={"sec-fetch-site": "cross-site"}
        ).status
        == 403
    )
    assert CALLS == []

    # With it, as a form field or htmx's header, from its own origin: it reaches the app,
    # body intact
    same = {"origin": "http://127.0.0.1:8600", "sec-fetch-site": "same-origin"}
    assert guarded.post("/task/retry", {"id": "t", "csrf": csrf}, headers=same).status == 200
    assert guarded.post("/a", {"id": "u"}, headers={"x-csrf-token": csrf}).status == 200
    assert [f"POST /task/retry id=t&csrf={csrf}", "POST /a id=u"] == CALLS


def test_the_csrf_token_is_not_the_secret() -> None:
    assert csrf_token(TOKEN) != TOKEN
    assert TOKEN not in csrf_token(TOKEN)


def test_responses_carry_a_strict_content_security_policy(guarded: Browser) -> None:
    reply = guarded.get("/", headers={"authorization": f"Bearer {TOKEN}"})
    policy = reply.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert reply.headers["referrer-policy"] == "same-origin"
    assert reply.headers["x-frame-options"] == "DENY"
    assert reply.headers["cache-control"] == "no-store"


def test_a_short_token_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="at least 32"):
        DashboardSettings(token="short")


def test_every_page_and_file_of_the_real_dashboard_needs_the_token(served: Served) -> None:
    anonymous = served.browser(logged_in=False)
    task = served.create("NOOP_TASK", {})
    paths = ("/", "/overview/live", "/tasks", f"/task?id={task.id}", "/new", "/static/htmx.min.js")
    for path in paths:
        assert anonymous.get(path).status == 401, path
    assert anonymous.post("/task/retry", {"id": task.id, "csrf": served.csrf}).status == 401
    browser = served.browser()
    for path in paths:
        assert browser.get(path).status == 200, path


def test_read_only_refuses_every_action_and_offers_none(routed_app: Any) -> None:
    # Given a read-only dashboard and a FAILED task
    served = serve(routed_app, read_only=True)
    task = served.failed()
    browser = served.browser()

    # Then its page offers no action, and every action is refused, confirmations included
    page = browser.get(f"/task?id={task.id}").text
    assert "/task/retry" not in page and "New task" not in page
    form = {"id": task.id, "csrf": served.csrf}
    assert browser.get(f"/task/retry?id={task.id}").status == 403
    assert browser.post("/task/retry", form).status == 403
    assert browser.get("/new?type=NOOP_TASK").status == 403
    create = {"__type": "NOOP_TASK", "__data": "{}", "csrf": served.csrf}
    assert browser.post("/new/create", create).status == 403
    assert browser.post("/new/confirm", {"__type": "NOOP_TASK", "csrf": served.csrf}).status == 403
    # And nothing changed
    assert served.client.get_task(task.id).status.value == "FAILED"
    assert served.client.get_task(task.id).executions == []
    assert len(served.client.list_tasks()[0]) == 1


@pytest.mark.parametrize("redact", [True, False])
def test_an_unhandled_error_never_prints_task_data_with_redact_data(
    redact: bool, capsys: pytest.CaptureFixture[str]
) -> None:
    async def failing(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("input_value='the secret task data'")

    settings = DashboardSettings(port=PORT, token=TOKEN, prefix=PREFIX, redact_data=redact)
    browser = Browser(Guard(failing, settings), prefix=PREFIX)
    reply = browser.get("/", headers={"authorization": f"Bearer {TOKEN}"})
    assert reply.status == 500 and "secret" not in reply.text
    err = capsys.readouterr().err
    assert "ValueError" in err
    assert ("the secret task data" in err) is not redact
