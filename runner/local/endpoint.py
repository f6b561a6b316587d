"""The local stack's AWS endpoint, in a process of its own: moto's server plus Lambda.

On AWS, DynamoDB, Step Functions and Lambda's pollers are separate machines. Locally,
moto's server used to share one interpreter (and its one lock) with the stream pollers
and the handlers they call, so every request moto answered stole time from the runner
and the other way round. Here moto runs in a child process, which a second core can run
beside the pollers (bench/README.md, figure 4).

The child also runs what moto itself invokes: Step Functions' `lambda:invoke` reaches
moto's Lambda, whose invoke a `LambdaDispatcher` answers with the Python handler, in the
child, with the functions' environment. The pollers and schedules stay in the parent.

Protocol, one JSON object per line:
- child → parent, on the file descriptor given as --report-fd:
  `{"endpoint": url}` once listening, then `{"registered": n}` after each registration;
- parent → child, on stdin: `{"env": {...}, "functions": [{"name", "handler",
  "timeout"}]}` registers handlers after the stack exists; `{"stats": true}` is answered
  with `{"stats": {operation: {"calls", "cpu_s"}}}` (CPU time of each moto action since
  the last such request: where the endpoint's time goes, for bench/);
- stdin closed (the parent stopped or died): the server stops and the child exits;
  SIGINT (Ctrl-C in a terminal reaches both) is ignored.
The child's stdout and stderr are the parent's: handler logs show where they did before.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import IO, Any

from runner.local.template import ROOT

START_TIMEOUT_SECONDS = 60.0
REPLY_TIMEOUT_SECONDS = 60.0
# After the report pipe closes, how long the child gets to exit before it is reported.
EXIT_GRACE_SECONDS = 5.0

log = logging.getLogger(__name__)


class EndpointError(Exception):
    """The endpoint process did not start or stopped answering."""


class EndpointProcess:
    """The parent's handle on the child: start, register functions, stop."""

    def __init__(self, port: int = 0, env: dict[str, str] | None = None) -> None:
        read_fd, write_fd = os.pipe()
        child_env = dict(os.environ if env is None else env)
        child_env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(ROOT), child_env.get("PYTHONPATH", "")) if p
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "runner.local.endpoint",
                "--port",
                str(port),
                "--report-fd",
                str(write_fd),
            ],
            cwd=ROOT,
            env=child_env,
            stdin=subprocess.PIPE,
            pass_fds=(write_fd,),
            text=True,
        )
        os.close(write_fd)
        self._reports = read_fd
        self._buffer = b""
        self._lock = threading.Lock()  # one request and its reply at a time
        self._stopping = False
        try:
            self.endpoint_url: str = self._receive(START_TIMEOUT_SECONDS)["endpoint"]
        except BaseException:
            self.stop()
            raise
        threading.Thread(target=self._watch, name="endpoint-watch", daemon=True).start()

    def _watch(self) -> None:
        code = self.process.wait()
        if not self._stopping:
            log.error("the local AWS endpoint process exited (%s): the stack cannot work", code)

    @property
    def pid(self) -> int:
        return self.process.pid

    def register(self, functions: Sequence[dict[str, Any]], env: dict[str, str]) -> None:
        """Give the child the functions' handlers and environment; wait until it has them."""
        self._request({"env": env, "functions": list(functions)})

    def stats(self) -> dict[str, dict[str, float]]:
        """CPU seconds and calls per moto action since the last call (then reset)."""
        reply = self._request({"stats": True})
        stats: dict[str, dict[str, float]] = reply["stats"]
        return stats

    def _request(self, message: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        with self._lock:
            try:
                self.process.stdin.write(json.dumps(message) + "\n")
                self.process.stdin.flush()
            except BrokenPipeError as exc:
                raise EndpointError(self._exited()) from exc
            return self._receive(REPLY_TIMEOUT_SECONDS)

    def _receive(self, timeout: float) -> dict[str, Any]:
        """The next reply line, read from the pipe's file descriptor into our own buffer
        (a buffered file object could hold a line that select() does not see)."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._reports], [], [], max(0.0, left))
            if not ready:
                raise EndpointError(f"the local AWS endpoint process is silent for {timeout:.0f} s")
            chunk = os.read(self._reports, 65536)
            if not chunk:
                raise EndpointError(self._exited())
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise EndpointError(f"the local AWS endpoint process: {reply['error']}")
        return reply

    def _exited(self) -> str:
        try:
            code = self.process.wait(EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            return "the local AWS endpoint process closed its report pipe"
        return f"the local AWS endpoint process exited with {code}"

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                self.process.stdin.close()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        with contextlib.suppress(OSError):
            os.close(self._reports)


def _serve(port: int, report: IO[str]) -> None:
    from moto.server import ThreadedMotoServer

    from runner.app import get_app
    from runner.local.dynamodb_fidelity import dynamodb_fidelity
    from runner.local.lambdas import LambdaDispatcher
    from runner.local.motoserver import fast_stream_records, quiet_moto, serialised_dynamodb
    from runner.local.resources import resolve_handler

    def send(message: dict[str, Any]) -> None:
        report.write(json.dumps(message) + "\n")
        report.flush()

    if port:  # moto's server would wait forever for a port it cannot bind
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError as exc:
                send({"error": f"cannot listen on 127.0.0.1:{port}: {exc.strerror}"})
                return
    meter = ActionMeter()
    # The meter first: serialised_dynamodb wraps whatever call_action is then in place.
    with (
        meter.installed(),
        serialised_dynamodb(),
        fast_stream_records(),
        dynamodb_fidelity(),
        quiet_moto(),
    ):
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            host, real_port = server.get_host_and_port()
            # Moto's Step Functions executor calls back to localhost:$MOTO_PORT.
            os.environ["MOTO_PORT"] = str(real_port)
            dispatcher = LambdaDispatcher()
            with dispatcher.installed():
                send({"endpoint": f"http://{host}:{real_port}"})
                for line in sys.stdin:
                    message = json.loads(line)
                    if message.get("stats"):
                        send({"stats": meter.take()})
                        continue
                    try:
                        for function in message.get("functions", []):
                            dispatcher.register(
                                function["name"],
                                resolve_handler(function["handler"]),
                                float(function["timeout"]),
                            )
                    except Exception as exc:  # a handler that does not import
                        send({"error": f"registering functions: {type(exc).__name__}: {exc}"})
                        continue
                    os.environ.update(message.get("env", {}))
                    get_app.cache_clear()  # handlers read their settings once
                    send({"registered": len(message.get("functions", []))})
        finally:
            server.stop()


class ActionMeter:
    """CPU time (this thread's, so waits for locks are not counted) per moto action."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stats: dict[str, list[float]] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        from moto.core.responses import BaseResponse

        original = BaseResponse.call_action
        meter = self

        def call_action(response: Any) -> Any:
            started = time.thread_time()
            try:
                return original(response)
            finally:
                name = f"{type(response).__name__}.{response._get_action()}"
                meter._add(name, time.thread_time() - started)

        from moto.moto_server.werkzeug_app import DomainDispatcherApplication

        original_app = DomainDispatcherApplication.__call__

        def app_call(app: Any, environ: Any, start_response: Any) -> Any:
            started = time.thread_time()
            try:
                return original_app(app, environ, start_response)
            finally:
                meter._add("wsgi.all", time.thread_time() - started)

        DomainDispatcherApplication.__call__ = app_call  # type: ignore[method-assign,assignment]
        BaseResponse.call_action = call_action  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            BaseResponse.call_action = original  # type: ignore[method-assign]
            DomainDispatcherApplication.__call__ = original_app  # type: ignore[method-assign]

    def _add(self, name: str, cpu_seconds: float) -> None:
        with self._lock:
            entry = self._stats.setdefault(name, [0, 0.0])
            entry[0] += 1
            entry[1] += cpu_seconds

    def take(self) -> dict[str, dict[str, float]]:
        with self._lock:
            taken, self._stats = self._stats, {}
        return {
            name: {"calls": calls, "cpu_s": round(cpu, 3)} for name, (calls, cpu) in taken.items()
        }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--report-fd", type=int, required=True)
    args = parser.parse_args(argv)
    # Ctrl-C reaches the whole process group: the parent decides when this one stops
    # (its pollers may still be finishing a request), by closing stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with os.fdopen(args.report_fd, "w") as report:
        _serve(args.port, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
