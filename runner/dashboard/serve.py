"""Running the dashboard: the socket bound first (so the port, and with it the allowed
Host, is known before anything is served), then uvicorn on it, in the foreground or in
a thread of its own."""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

from runner.dashboard.settings import DashboardSettings
from runner.errors import ConfigurationError

# Seconds a thread-run server gets to start.
START_TIMEOUT_SECONDS = 10.0


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port); port 0 takes a free one."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ConfigurationError(
                f"port {port} on {host} is in use (another dashboard?): pick another with --port"
            ) from None
        raise ConfigurationError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def build_app(settings: DashboardSettings, client: Any) -> Any:
    from runner.dashboard.app import create_app
    from runner.dashboard.reads import DashboardReads
    from runner.dashboard.throughput import throughput_source

    throughput = throughput_source(client.app, settings.metrics_namespace)
    reads = DashboardReads(client.app, settings, throughput=throughput)
    return create_app(settings, client, reads)


def _server(app: Any) -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        # Host checks and CSRF are the Guard's; uvicorn must not trust proxy headers.
        proxy_headers=False,
        server_header=False,
        lifespan="off",
    )
    return uvicorn.Server(config)


def bound_settings(settings: DashboardSettings) -> tuple[DashboardSettings, socket.socket]:
    sock = bind(settings.host, settings.port)
    port = int(sock.getsockname()[1])
    return dataclasses.replace(settings, port=port), sock


def run(settings: DashboardSettings, client: Any, sock: socket.socket) -> None:
    """Serve in the foreground until Ctrl-C (uvicorn handles the signals)."""
    _server(build_app(settings, client)).run(sockets=[sock])


@contextlib.contextmanager
def running(settings: DashboardSettings, client: Any) -> Iterator[DashboardSettings]:
    """Serve in a thread for the block's duration; yields the settings with the real port."""
    settings, sock = bound_settings(settings)
    server = _server(build_app(settings, client))
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="dashboard", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if not server.started:
            raise ConfigurationError("the dashboard did not start")
        yield settings
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
