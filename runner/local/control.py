"""The local stack's control endpoint: change faults while the stack runs, read counters.

Loopback only (it binds 127.0.0.1 and refuses any other peer), and not for web pages: a
request with an `Origin` header, or a `Host` other than 127.0.0.1 or localhost (DNS
rebinding), is refused 403, and the faults change by PUT only (a page cannot send one
without a CORS preflight, which is never granted). JSON in, JSON out:

- `GET /faults`: the active faults, those whose limit is spent, the seed, and how often
  each fault fired;
- `PUT /faults` with `{"faults": "SPEC", "seed": N}` (N an integer; or SPEC as plain
  text): makes SPEC (runner.local.chaos) the active faults; `""` turns them off;
- `DELETE /faults`: turns every fault off;
- `GET /lambda`: per function, invocations, cold starts and their init times, timeouts,
  crashes, throttles, service errors, queued invocations and the live environments;
- `GET /stream`: per stream poller, invocations, records delivered, retries,
  redeliveries.

A bad spec is answered 400 with the reason, and the faults stay as they were.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

log = logging.getLogger(__name__)

# (method, path) → handler(body) → (status, JSON-able reply)
Route = Callable[[Any], tuple[int, Any]]
MAX_BODY_BYTES = 64 * 1024
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


class ControlServer:
    """A small HTTP server on 127.0.0.1 answering `routes`."""

    def __init__(self, routes: Mapping[tuple[str, str], Route], port: int = 0) -> None:
        self.routes = dict(routes)
        control = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                control._answer(self, "GET")

            def do_PUT(self) -> None:
                control._answer(self, "PUT")

            def do_POST(self) -> None:  # never an alias of PUT: a web page can POST
                control._reply(self, 405, {"error": "POST is not answered here; use PUT"})

            def do_DELETE(self) -> None:
                control._answer(self, "DELETE")

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("control: " + format, *args)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._server.daemon_threads = True
        host, real_port = self._server.server_address[:2]
        self.url = f"http://{host!s}:{real_port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="control", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, request: BaseHTTPRequestHandler, method: str) -> None:
        peer = request.client_address[0]
        if not ipaddress.ip_address(peer).is_loopback:
            self._reply(request, 403, {"error": "the control endpoint answers loopback only"})
            return
        host = (request.headers.get("Host") or "").rsplit(":", 1)[0].strip("[]").lower()
        if request.headers.get("Origin") is not None or host not in LOCAL_HOSTS:
            self._reply(request, 403, {"error": "the control endpoint is not for web pages"})
            return
        path = request.path.split("?", 1)[0].rstrip("/") or "/"
        route = self.routes.get((method, path))
        if route is None:
            known = sorted(f"{m} {p}" for m, p in self.routes)
            self._reply(request, 404, {"error": f"no {method} {path}", "routes": known})
            return
        declared = (request.headers.get("Content-Length") or "0").strip()
        if not declared.isdigit():
            request.close_connection = True
            self._reply(request, 400, {"error": f"bad Content-Length: {declared!r}"})
            return
        length = int(declared)
        if length > MAX_BODY_BYTES:
            self._reply(request, 413, {"error": "request body too large"})
            return
        raw = request.rfile.read(length) if length else b""
        try:
            body = _body(raw, request.headers.get("Content-Type", ""))
            status, reply = route(body)
        except ValueError as exc:
            status, reply = 400, {"error": str(exc)}
        except Exception as exc:
            log.exception("control %s %s failed", method, path)
            status, reply = 500, {"error": f"{type(exc).__name__}: {exc}"}
        self._reply(request, status, reply)

    @staticmethod
    def _reply(request: BaseHTTPRequestHandler, status: int, reply: Any) -> None:
        data = (json.dumps(reply, indent=2, default=str) + "\n").encode()
        request.send_response(status)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        request.wfile.write(data)


def _body(raw: bytes, content_type: str) -> Any:
    """JSON when it looks like JSON; a plain-text fault spec otherwise."""
    text = raw.decode("utf-8", errors="strict").strip()
    if not text:
        return None
    if "json" in content_type or text.startswith(("{", "[", '"')):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"the body is not JSON: {exc}") from exc
    return {"faults": text}
