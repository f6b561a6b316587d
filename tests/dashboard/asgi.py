"""Requests to an ASGI app in this process, as a browser would send them: no server, no
extra HTTP client library. Sync routes run in Starlette's thread pool as under uvicorn."""

from __future__ import annotations

import asyncio
import html
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode, urlsplit

HOST = "127.0.0.1:8600"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode()

    @property
    def page(self) -> str:
        """The text as a reader sees it: HTML entities decoded."""
        return html.unescape(self.text)


@dataclass
class Browser:
    """Sends requests with the cookies earlier replies set, like a browser."""

    app: Any
    host: str = HOST
    cookies: dict[str, str] = field(default_factory=dict)
    # The dashboard's path prefix: put in front of a path that does not start with it,
    # so tests name pages as the routes do ("/tasks"); `outside=True` sends it as given.
    prefix: str = ""

    def request(
        self,
        method: str,
        url: str,
        *,
        form: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
        outside: bool = False,
    ) -> Reply:
        if self.prefix and not outside and not url.startswith(self.prefix):
            url = self.prefix + url
        parts = urlsplit(url)
        body = urlencode(form).encode() if form is not None else b""
        sent = {"host": self.host, **(headers or {})}
        if form is not None:
            sent.setdefault("content-type", "application/x-www-form-urlencoded")
        if self.cookies:
            sent.setdefault("cookie", "; ".join(f"{k}={v}" for k, v in self.cookies.items()))
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": parts.path or "/",
            "raw_path": (parts.path or "/").encode(),
            "query_string": parts.query.encode(),
            "headers": [(k.lower().encode(), v.encode()) for k, v in sent.items()],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8600),
        }
        reply = asyncio.run(_call(self.app, scope, body))
        cookie = reply.headers.get("set-cookie")
        if cookie:
            name, _, rest = cookie.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return reply

    def get(self, url: str, **kwargs: Any) -> Reply:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, form: dict[str, str], **kwargs: Any) -> Reply:
        return self.request("POST", url, form=form, **kwargs)


async def _call(app: Any, scope: dict[str, Any], body: bytes) -> Reply:
    sent = False
    status = 0
    headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
            for k, v in message.get("headers", []):
                headers[k.decode().lower()] = v.decode()
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))

    await app(scope, receive, send)
    return Reply(status, headers, b"".join(chunks))
