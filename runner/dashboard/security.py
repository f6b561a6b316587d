"""Who may talk to the dashboard: one ASGI middleware in front of every route.

- **Host check** (DNS rebinding): a page on evil.example whose name was re-pointed at
  127.0.0.1 sends `Host: evil.example`; only the address the dashboard serves passes.
- **Path**: every page is under a random prefix (`/d/<random>/`, `DashboardSettings.prefix`);
  anything else is 404. Cookies ignore ports, so the session cookie is scoped to that
  path: a server on another port of this host (the moto endpoint, a developer's app)
  never receives it, as it does not know the prefix.
- **Token**: every request, reads and static files included, is authenticated: once by
  the process's token in the URL that was printed (`.../?token=...`), which starts a
  session (an HttpOnly, SameSite=Strict cookie holding a random session id, *not* the
  token) and redirects to the same page without it; then by that cookie; or, for
  scripts, by the token in `Authorization: Bearer ...`.
- **CSRF**: a request that changes something (any method but GET and HEAD) and is
  authenticated by the cookie must come from the dashboard's own origin (Origin and
  Sec-Fetch-Site, where the browser sends them) and carry the CSRF token, derived from
  the secret, as the `X-CSRF-Token` header or the `csrf` form field. SameSite=Strict
  already keeps the cookie off cross-site requests; this holds even without it.
- **Headers**: a Content-Security-Policy that allows only the dashboard's own scripts and
  styles (no inline script, no eval, no framing), no referrer to other sites, no caching.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode

from runner.dashboard.settings import DashboardSettings

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COOKIE_PREFIX = "task_runner_dashboard_"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf"
# Forms are small: a create-task form carries one input (at most DynamoDB's 400 KB).
MAX_BODY_BYTES = 512 * 1024
SAFE_METHODS = frozenset({"GET", "HEAD"})
# Sessions a process remembers (each login through the printed URL starts one); past
# this the oldest is forgotten and its browser must open the URL again.
MAX_SESSIONS = 1000
SESSION_BYTES = 32
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    # Not no-referrer: with it a browser sends `Origin: null` on a form POST, and the
    # origin check could not tell the dashboard's own forms from a sandboxed page's.
    (b"referrer-policy", b"same-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
)


def csrf_token(secret: str) -> str:
    """The CSRF token pages embed: derived from the secret, not the secret itself."""
    return hmac.new(secret.encode(), b"csrf", hashlib.sha256).hexdigest()


def allowed_hosts(settings: DashboardSettings) -> frozenset[str]:
    """The Host headers the dashboard answers: the loopback names with its port, or the
    one host it was told to bind."""
    port = settings.port
    if settings.host in ("127.0.0.1", "::1", "localhost"):
        names: tuple[str, ...] = LOOPBACK_NAMES
    else:
        names = (f"[{settings.host}]" if ":" in settings.host else settings.host,)
    return frozenset(f"{name}:{port}" for name in names)


def cookie_name(settings: DashboardSettings) -> str:
    # Cookies ignore ports: two dashboards on one host must not overwrite each other's.
    return f"{COOKIE_PREFIX}{settings.port}"


def _same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def _cookie_values(header: str, wanted: str) -> list[str]:
    """Every value the browser sent under `wanted`: a page elsewhere on this host may set
    a cookie of the same name (with a narrower Path it comes first), so all are tried."""
    found: list[str] = []
    for part in header.split(";"):
        name, _, value = part.strip().partition("=")
        if name == wanted:
            found.append(value)
    return found


class Sessions:
    """The session ids this process handed out, newest last (at most MAX_SESSIONS)."""

    def __init__(self) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()

    def start(self) -> str:
        session = secrets.token_urlsafe(SESSION_BYTES)
        self._ids[session] = None
        while len(self._ids) > MAX_SESSIONS:
            self._ids.popitem(last=False)
        return session

    def valid(self, given: str) -> bool:
        # Membership in a dict of random ids: a guess cannot be timed closer (the hash of
        # the guess decides the bucket, not its shared prefix with a real id).
        return given in self._ids


class Guard:
    """The middleware: refuses what fails a check, adds the headers to what passes."""

    def __init__(self, app: ASGIApp, settings: DashboardSettings) -> None:
        self.app = app
        self.settings = settings
        self.hosts = allowed_hosts(settings)
        self.origins = frozenset(f"http://{host}" for host in self.hosts)
        self.cookie = cookie_name(settings)
        self.csrf = csrf_token(settings.token)
        self.prefix = settings.prefix
        self.sessions = Sessions()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.app(scope, receive, send)
            return
        if scope["type"] != "http":  # a WebSocket: the dashboard has none
            await send({"type": "websocket.close", "code": 1008})
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        if headers.get("host", "") not in self.hosts:
            await _plain(send, 403, "This dashboard answers only at its own address.")
            return
        path = scope.get("path", "/")
        if not (path == self.prefix or path.startswith(self.prefix + "/")):
            await _plain(send, 404, "Not found: open the URL the dashboard printed.")
            return
        query = parse_qsl(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
        given = dict(query).get("token")
        if given is not None:
            await self._login(scope, send, given, query)
            return
        bearer = headers.get("authorization", "")
        by_header = bearer.startswith("Bearer ") and _same(bearer[7:], self.settings.token)
        by_cookie = any(
            self.sessions.valid(value)
            for value in _cookie_values(headers.get("cookie", ""), self.cookie)
        )
        if not (by_header or by_cookie):
            await _plain(
                send,
                401,
                "This dashboard needs its token: open the URL it printed when it started"
                " (.../?token=...).",
            )
            return
        if scope["method"] not in SAFE_METHODS and not by_header:
            refusal = self._cross_site(headers)
            if refusal is None:
                body = await _read_body(receive)
                if body is None:
                    await _plain(send, 413, "Request too large.")
                    return
                if not (_same(headers.get(CSRF_HEADER), self.csrf) or self._csrf_in(body)):
                    refusal = "missing or wrong CSRF token: reload the page and try again"
                receive = _replay(body, receive)
            if refusal is not None:
                await _plain(send, 403, f"Refused: {refusal}.")
                return
        started: list[bool] = []
        try:
            await self.app(_inside(scope, self.prefix), receive, _with_headers(send, started))
        except Exception as exc:
            # Here, not in uvicorn: its traceback would print the exception's text, which
            # may quote task data (a pydantic error's input_value) despite --redact-data.
            _report(exc, redact=self.settings.redact_data)
            if not started:
                await _plain(send, 500, "The dashboard failed on this request (see its log).")

    def _cross_site(self, headers: dict[str, str]) -> str | None:
        origin = headers.get("origin")
        if origin is not None and origin not in self.origins:
            return f"the request comes from another origin ({origin})"
        if headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
            return "the request comes from another site"
        return None

    def _csrf_in(self, body: bytes) -> bool:
        fields = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        return _same(fields.get(CSRF_FIELD), self.csrf)

    async def _login(self, scope: Scope, send: Send, given: str, query: list[Any]) -> None:
        """`?token=...`: set the cookie and send the browser to the URL without it."""
        if not _same(given, self.settings.token):
            await _plain(send, 401, "Wrong token: open the URL the dashboard printed.")
            return
        rest = urlencode([(k, v) for k, v in query if k != "token"])
        # The path as the browser sent it (still percent-encoded), which begins with the
        # prefix: never a decoded one (not latin-1 encodable) or one that names a host.
        raw = scope.get("raw_path") or quote(scope.get("path", "/")).encode()
        location = raw.decode("latin-1").split("?", 1)[0] + (f"?{rest}" if rest else "")
        cookie = (
            f"{self.cookie}={self.sessions.start()}; Path={self.prefix}; HttpOnly; SameSite=Strict"
        )
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode("latin-1")),
                    (b"set-cookie", cookie.encode("latin-1")),
                    (b"cache-control", b"no-store"),
                    *SECURITY_HEADERS,
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


def _inside(scope: Scope, prefix: str) -> Scope:
    """The request as the routes see it: the prefix taken off the path."""
    inner = dict(scope)
    inner["path"] = scope["path"][len(prefix) :] or "/"
    raw = scope.get("raw_path")
    if raw is not None:
        # The prefix is URL-safe characters, so a browser sends it as it is; a request
        # that spelt it percent-encoded gets its path re-encoded instead.
        encoded = prefix.encode()
        inner["raw_path"] = (
            raw[len(encoded) :] or b"/"
            if raw.startswith(encoded)
            else quote(inner["path"]).encode()
        )
    return inner


def _report(exc: Exception, *, redact: bool) -> None:
    """An unhandled error on stderr: with --redact-data only its type and where it was
    raised, never its text."""
    import sys
    import traceback

    if not redact:
        traceback.print_exception(exc, file=sys.stderr)
        return
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    print(f"dashboard: unhandled {type(exc).__name__}{where} (text hidden)", file=sys.stderr)


def _with_headers(send: Send, started: list[bool] | None = None) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            if started is not None:
                started.append(True)
            present = {name.lower() for name, _ in message.get("headers", [])}
            extra = [h for h in SECURITY_HEADERS if h[0] not in present]
            if b"cache-control" not in present:
                extra.append((b"cache-control", b"no-store"))
            message["headers"] = [*message.get("headers", []), *extra]
        await send(message)

    return wrapped


async def _read_body(receive: Receive) -> bytes | None:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, original: Receive) -> Receive:
    """The body read for the CSRF check, once; then the client's own messages."""
    sent = False

    async def receive() -> Message:
        nonlocal sent
        if sent:
            return await original()
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _plain(send: Send, status: int, text: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"cache-control", b"no-store"),
                *SECURITY_HEADERS,
            ],
        }
    )
    await send({"type": "http.response.body", "body": (text + "\n").encode()})
