"""The local stack's AWS endpoint, in a process of its own: moto's server plus Lambda.

On AWS, DynamoDB, Step Functions and Lambda are separate machines. Locally, moto runs in
this child process, which a second core can run beside the stream pollers in the stack's
process (bench/README.md, figure 4). It also hosts what moto cannot run without Docker:

- the Lambda service (runner.local.lambda_service): every Invoke (Step Functions'
  `lambda:invoke`, the pollers' and schedules' invocations, any boto3 client) runs in a
  worker process of the function's own (runner.local.lambda_env);
- chaos (runner.local.chaos_endpoint): the DynamoDB, Step Functions and Lambda faults;
- DynamoDB's TTL deletions (runner.local.ttl), and the DynamoDB, Step Functions and SQS
  fidelity patches (runner.local.dynamodb_fidelity, runner.local.sfn_fidelity,
  runner.local.sqs_fidelity).

Protocol, one JSON object per line:
- child → parent, on the file descriptor given as --report-fd: `{"endpoint": url}` once
  listening, then one reply per request (`{"error": text}` if it failed);
- parent → child, on stdin, one request per line:
  `{"functions": [FunctionConfig dicts], "env": {...}, "code": [[source, path]]}`
  registers functions, `env` being the overlay every environment gets and `code` the
  modules copied into their task root (→ `{"registered": n}`);
  `{"stats": true}` → `{"stats": {action: {"calls", "cpu_s"}}}`, the CPU time of each
  moto action since the last such request (where the endpoint's time goes, for bench/);
  `{"faults": SPEC, "seed": N}` makes SPEC the active faults (`"faults": null` only
  reads them) → `{"faults": {"faults", "seed", "injected"}}`;
  `{"lambda": true}` → `{"lambda": {function: stats}}`;
  `{"ttl": {"lag": seconds or null}}` → `{"ttl": {"lag", "deleted"}}`;
- stdin closed (the parent stopped or died): the server and the environments stop and
  the child exits; SIGINT (Ctrl-C in a terminal reaches both) is ignored.
The child's stdout and stderr are the parent's, and so the environments' (handler logs).
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

    def __init__(
        self, port: int = 0, env: dict[str, str] | None = None, log_level: str = "WARNING"
    ) -> None:
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
                "--log-level",
                log_level,
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

    def register(
        self,
        functions: Sequence[dict[str, Any]],
        env: dict[str, str],
        code: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Give the Lambda service the functions (FunctionConfig dicts), the overlay
        every environment runs with and the modules to copy into the task root
        (runner.local.lambda_runtime.module_files); wait until it has them."""
        self._request({"env": env, "functions": list(functions), "code": list(code)})

    def stats(self) -> dict[str, dict[str, float]]:
        """CPU seconds and calls per moto action since the last call (then reset)."""
        reply = self._request({"stats": True})
        stats: dict[str, dict[str, float]] = reply["stats"]
        return stats

    def faults(self, spec: str | None = None, seed: int | None = None) -> dict[str, Any]:
        """Make `spec` the active endpoint faults (None: leave them); their state."""
        reply: dict[str, Any] = self._request({"faults": spec, "seed": seed})["faults"]
        return reply

    def lambda_stats(self) -> dict[str, Any]:
        """Per function: invocations, cold starts, timeouts, crashes, environments."""
        reply: dict[str, Any] = self._request({"lambda": True})["lambda"]
        return reply

    def ttl(self, lag_s: float | None) -> dict[str, Any]:
        """Delete expired items `lag_s` after they expire (None: never)."""
        reply: dict[str, Any] = self._request({"ttl": {"lag": lag_s}})["ttl"]
        return reply

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

    from runner.local.chaos import ENDPOINT_SERVICES, FaultPlan, parse_faults
    from runner.local.chaos_endpoint import EndpointChaos
    from runner.local.dynamodb_fidelity import dynamodb_fidelity
    from runner.local.lambda_config import FunctionConfig
    from runner.local.lambda_service import (
        ACCOUNT_CONCURRENCY,
        ACCOUNT_CONCURRENCY_ENV,
        LambdaService,
    )
    from runner.local.motoserver import fast_stream_records, quiet_moto, serialised_dynamodb
    from runner.local.sfn_fidelity import immediate_stop, lambda_unknown_errors
    from runner.local.sqs_fidelity import sqs_visibility_fidelity
    from runner.local.ttl import TtlDeleter

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
    plan = FaultPlan(services=ENDPOINT_SERVICES)
    concurrency = os.environ.get(ACCOUNT_CONCURRENCY_ENV)
    service = LambdaService(
        account_concurrency=int(concurrency) if concurrency else ACCOUNT_CONCURRENCY
    )
    chaos = EndpointChaos(plan, service)
    # The meter first: chaos and serialised_dynamodb wrap whatever call_action is in place.
    with (
        meter.installed(),
        chaos.installed(),
        serialised_dynamodb() as lock,
        fast_stream_records(),
        dynamodb_fidelity(observe=chaos.on_write),
        lambda_unknown_errors(),
        immediate_stop(),
        sqs_visibility_fidelity(),
        quiet_moto(),
        service.installed(),
    ):
        ttl = TtlDeleter(lock)
        ttl.start()
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        try:
            host, real_port = server.get_host_and_port()
            # Moto's Step Functions executor calls back to localhost:$MOTO_PORT.
            os.environ["MOTO_PORT"] = str(real_port)
            send({"endpoint": f"http://{host}:{real_port}"})
            for line in sys.stdin:
                message = json.loads(line)
                try:
                    if message.get("stats"):
                        send({"stats": meter.take()})
                    elif "faults" in message:
                        if message["faults"] is not None:
                            plan.replace(parse_faults(message["faults"]), message.get("seed"))
                        send({"faults": plan.snapshot()})
                    elif message.get("lambda"):
                        send({"lambda": service.stats()})
                    elif "ttl" in message:
                        ttl.lag_s = message["ttl"].get("lag")
                        send({"ttl": {"lag": ttl.lag_s, "deleted": ttl.deleted}})
                    else:
                        service.overlay.update(message.get("env", {}))
                        service.load([(src, rel) for src, rel in message.get("code", [])])
                        functions = [FunctionConfig.from_dict(f) for f in message["functions"]]
                        service.register(functions)
                        send({"registered": len(functions)})
                except Exception as exc:  # a bad request: say why, keep serving
                    send({"error": f"{_request_name(message)}: {type(exc).__name__}: {exc}"})
        finally:
            ttl.stop()
            server.stop()
            service.stop()


def _request_name(message: dict[str, Any]) -> str:
    if "functions" in message:
        return "registering functions"
    return next(iter(message), "request")


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
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("runner.local").setLevel(args.log_level.upper())
    # Ctrl-C reaches the whole process group: the parent decides when this one stops
    # (its pollers may still be finishing a request), by closing stdin.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    with os.fdopen(args.report_fd, "w") as report:
        _serve(args.port, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
