"""Chaos specs, the fault plan's draws and counts, and the control endpoint (no stack)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from runner.local.chaos import Fault, FaultPlan, FaultSpecError, parse_faults
from runner.local.control import ControlServer
from runner.local.sfn_fidelity import UNKNOWN, step_functions_error


def test_a_spec_names_service_qualifier_kind_rate_and_limit() -> None:
    faults = parse_faults(
        "dynamodb.throttle=0.2, states.StartExecution.unavailable=1,"
        "lambda.processStream.crash-after-claim=1x3,stream.redeliver=.5"
    )

    assert faults == (
        Fault("dynamodb", None, "throttle", 0.2),
        Fault("states", "StartExecution", "unavailable", 1.0),
        Fault("lambda", "processStream", "crash-after-claim", 1.0, 3),
        Fault("stream", None, "redeliver", 0.5),
    )
    assert [str(f) for f in faults][2] == "lambda.processStream.crash-after-claim=1x3"
    assert parse_faults("") == ()


def test_a_timeout_after_a_claim_can_come_seconds_later() -> None:
    (fault,) = parse_faults("lambda.runTask.timeout-after-claim=1x1@2.5")
    assert fault == Fault("lambda", "runTask", "timeout-after-claim", 1.0, 1, 2.5)
    assert str(fault) == "lambda.runTask.timeout-after-claim=1x1@2.5s"
    assert parse_faults(str(fault)) == (fault,)


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("dynamodb.throttle", "expected SERVICE"),
        ("s3.throttle=0.1", "unknown service 's3'"),
        ("dynamodb.crash-after-claim=1", "dynamodb has no fault 'crash-after-claim'"),
        ("dynamodb.throttle=1.5", "between 0 and 1"),
        ("lambda.crash-after-claim=1x0", "at least 1"),
        ("dynamodb.a.b.throttle=1", "expected SERVICE"),
        ("lambda.crash-after-claim=1@2", "only timeout-after-claim takes @SECONDS"),
        ("lambda.timeout-after-claim=1@", "expected SERVICE"),
    ],
)
def test_a_bad_spec_says_which_part_and_why(spec: str, reason: str) -> None:
    with pytest.raises(FaultSpecError, match=reason):
        parse_faults(spec)


def test_a_qualifier_matches_the_function_by_its_short_or_full_name() -> None:
    fault = Fault("lambda", "processStream", "throttle", 1.0)
    assert fault.matches("lambda", "task-runner-dev-processStream", "throttle")
    assert fault.matches("lambda", "processStream", "throttle")
    assert not fault.matches("lambda", "task-runner-dev-runTask", "throttle")
    assert Fault("dynamodb", None, "throttle", 1.0).matches("dynamodb", "Query", "throttle")


def test_the_same_seed_draws_the_same_faults_and_a_limit_stops_them() -> None:
    def draws(seed: int) -> list[bool]:
        plan = FaultPlan(parse_faults("dynamodb.throttle=0.3"), seed=seed)
        return [plan.decide("dynamodb", "PutItem", "throttle") is not None for _ in range(200)]

    assert draws(7) == draws(7)
    assert 30 < sum(draws(7)) < 90

    reseeded = FaultPlan(parse_faults("dynamodb.throttle=0.3"))
    reseeded.replace(reseeded.faults, seed=7)
    assert [
        reseeded.decide("dynamodb", "PutItem", "throttle") is not None for _ in range(200)
    ] == draws(7)

    limited = FaultPlan(parse_faults("dynamodb.UpdateItem.throttle=1x2"), seed=1)
    fired = [limited.decide("dynamodb", "UpdateItem", "throttle") for _ in range(5)]
    assert [f is not None for f in fired] == [True, True, False, False, False]
    assert limited.decide("dynamodb", "PutItem", "throttle") is None  # not its action
    assert limited.snapshot()["injected"] == {"dynamodb.UpdateItem.throttle=1x2": 2}
    # A fault whose limit is spent is no longer listed as active
    assert limited.snapshot()["faults"] == []
    assert limited.snapshot()["spent"] == ["dynamodb.UpdateItem.throttle=1x2"]


def test_a_plan_keeps_only_its_own_processes_services() -> None:
    plan = FaultPlan(parse_faults("dynamodb.throttle=1,stream.redeliver=1"), services=["stream"])
    assert [str(f) for f in plan.faults] == ["stream.redeliver=1"]


def test_step_functions_names_platform_errors_lambda_unknown_and_function_errors_by_type() -> None:
    timeout = json.dumps({"errorType": "Sandbox.Timedout", "errorMessage": "Task timed out"})
    crash = json.dumps({"errorType": "Runtime.ExitError", "errorMessage": "signal: killed"})
    assert step_functions_error(timeout) == step_functions_error(crash) == UNKNOWN
    assert step_functions_error('{"errorMessage": "no type"}') == UNKNOWN
    assert step_functions_error('{"errorType": "TaskRetryableError"}') is None


def _request(url: str, method: str, body: bytes | None = None) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_control_endpoint_answers_its_routes_and_refuses_a_bad_spec() -> None:
    plan = FaultPlan(seed=3)

    def put(body: Any) -> tuple[int, Any]:
        plan.replace(parse_faults(body["faults"]))  # FaultSpecError is a ValueError: 400
        return 200, plan.snapshot()

    server = ControlServer(
        {("GET", "/faults"): lambda body: (200, plan.snapshot()), ("PUT", "/faults"): put}
    )
    server.start()
    try:
        assert server.url.startswith("http://127.0.0.1:")
        status, state = _request(f"{server.url}/faults", "PUT", b"dynamodb.throttle=0.5")
        assert status == 200 and state["faults"] == ["dynamodb.throttle=0.5"]

        status, reply = _request(f"{server.url}/faults", "PUT", b"dynamodb.nope=1")
        assert status == 400 and "has no fault 'nope'" in reply["error"]
        assert _request(f"{server.url}/faults", "GET")[1]["faults"] == ["dynamodb.throttle=0.5"]

        status, reply = _request(f"{server.url}/nothing", "GET")
        assert status == 404 and "GET /faults" in reply["routes"]
    finally:
        server.stop()


def _raw(url: str, request: bytes) -> bytes:
    """What the server answers to these exact bytes (the status line and headers)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply


def test_the_control_endpoint_refuses_bad_lengths_web_pages_and_a_bad_seed() -> None:
    from runner.local.stack_control import StackControl

    class Endpoint:  # the endpoint process's side, as StackControl uses it
        def faults(self, spec: str | None = None, seed: int | None = None) -> dict[str, Any]:
            return {"faults": [], "seed": seed, "injected": {}}

    plan = FaultPlan(services=["stream"])
    control = StackControl(Endpoint(), plan, [])  # type: ignore[arg-type]
    url = control.url
    put = "PUT /faults HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    try:
        # A Content-Length that is not a count is refused, and nothing is applied
        for length in ("abc", "-1"):
            answer = _raw(url, f"{put}Content-Length: {length}\r\n\r\nstream.redeliver=1".encode())
            assert answer.startswith(b"HTTP/1.0 400"), answer[:80]
        # A web page's request (an Origin header, a foreign Host, a POST) is refused
        page = (
            "POST /faults HTTP/1.1\r\nHost: 127.0.0.1\r\nOrigin: http://evil.example\r\n"
            "Content-Type: text/plain\r\nContent-Length: 18\r\n\r\nstream.redeliver=1"
        )
        assert _raw(url, page.encode())[:12] in (b"HTTP/1.0 403", b"HTTP/1.0 405")
        with_origin = put + "Origin: http://evil.example\r\nContent-Length: 18\r\n\r\n"
        assert _raw(url, (with_origin + "stream.redeliver=1").encode()).startswith(b"HTTP/1.0 403")
        rebound = put.replace("127.0.0.1", "evil.example") + "Content-Length: 18\r\n\r\n"
        assert _raw(url, (rebound + "stream.redeliver=1").encode()).startswith(b"HTTP/1.0 403")
        post = put.replace("PUT", "POST") + "Content-Length: 18\r\n\r\nstream.redeliver=1"
        assert _raw(url, post.encode()).startswith(b"HTTP/1.0 405")
        assert plan.faults == ()
        # A seed must be an integer
        for seed in ("[1]", "1.7", "true"):
            body = f'{{"faults": "stream.redeliver=1", "seed": {seed}}}'
            status, reply = _request(f"{url}/faults", "PUT", body.encode())
            assert status == 400 and "the seed must be an integer" in reply["error"], reply
        assert plan.faults == ()
        # And a well-formed request still works
        status, state = _request(f"{url}/faults", "PUT", b'{"faults": "stream.redeliver=1"}')
        assert status == 200 and state["faults"] == ["stream.redeliver=1"]
    finally:
        control.stop()
