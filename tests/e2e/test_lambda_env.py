"""Local Lambda execution environments live as Lambda's do (runner.local.lambda_service).

Real worker processes running the toy handlers of tests/e2e/lambda_handlers.py: cold
start then warm reuse, each function's own variables, concurrency up to the reserved
limit, the function's timeout enforced with Lambda's error, freezing between
invocations, and a crash or timeout discarding the environment.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.local.lambda_config import FunctionConfig
from runner.local.lambda_env import InvocationResult
from runner.local.lambda_service import FunctionThrottled, LambdaService

pytestmark = pytest.mark.slow

HANDLERS = "tests.e2e.lambda_handlers"


def config(name: str, handler: str, **kwargs: Any) -> FunctionConfig:
    return FunctionConfig(name=name, handler=f"{HANDLERS}.{handler}", **kwargs)


@pytest.fixture
def service() -> Iterator[LambdaService]:
    lambdas = LambdaService(overlay={"STACK_OVERLAY": "from the stack"})
    yield lambdas
    lambdas.stop()


def invoke(service: LambdaService, name: str, event: dict[str, Any]) -> InvocationResult:
    return service.invoke(name, json.dumps(event).encode())


def body(result: InvocationResult) -> Any:
    return json.loads(result.payload)


def process_state(pid: int) -> str:
    """R, S, T (stopped), ... from /proc."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


def test_a_cold_start_is_timed_and_the_next_invocation_reuses_the_environment(
    service: LambdaService,
) -> None:
    service.register([config("echo", "echo", timeout=3)])

    first = invoke(service, "echo", {"n": 1})
    second = invoke(service, "echo", {"n": 2})

    assert first.init_s is not None and first.init_s > 0
    assert second.init_s is None  # warm
    assert body(first)["pid"] == body(second)["pid"]
    assert body(second)["event"] == {"n": 2}
    assert 0 < body(second)["remaining_ms"] <= 3000  # the function's own timeout
    stats = service.stats()["echo"]
    assert (stats["invocations"], stats["cold_starts"]) == (2, 1)


def test_each_function_has_its_own_variables_the_overlay_and_lambdas_reserved_ones(
    service: LambdaService,
) -> None:
    names = [
        "OWN",
        "OTHER",
        "STACK_OVERLAY",
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_LOG_GROUP_NAME",
        "AWS_EXECUTION_ENV",
        "AWS_LAMBDA_RUNTIME_API",
        "_HANDLER",
        "LAMBDA_TASK_ROOT",
        "AWS_ACCESS_KEY_ID",
        "TZ",
    ]
    service.register(
        [
            config("one", "echo", timeout=3, memory_mb=512, environment={"OWN": "one"}),
            config("two", "echo", timeout=3, environment={"OWN": "two", "OTHER": "two"}),
        ]
    )

    one = body(invoke(service, "one", {"env": names}))["env"]
    two = body(invoke(service, "two", {"env": names}))["env"]

    assert (one["OWN"], one["OTHER"]) == ("one", None)  # not one merged set
    assert (two["OWN"], two["OTHER"]) == ("two", "two")
    assert one["STACK_OVERLAY"] == two["STACK_OVERLAY"] == "from the stack"
    assert one["AWS_LAMBDA_FUNCTION_NAME"] == "one"
    assert one["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert one["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert one["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/one"
    assert one["AWS_EXECUTION_ENV"] == "AWS_Lambda_python3.12"
    # Set as Lambda sets it (runner.runtime ends a runtime it finds it in)
    assert one["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:9001"
    assert one["_HANDLER"] == f"{HANDLERS}.echo"
    assert one["LAMBDA_TASK_ROOT"] and one["TZ"] == ":UTC"
    # Each environment signs with a key id of its own, so the endpoint can tell them apart
    assert one["AWS_ACCESS_KEY_ID"] != two["AWS_ACCESS_KEY_ID"]
    assert len(one["AWS_ACCESS_KEY_ID"]) == 20


def test_a_function_that_sets_a_reserved_variable_is_refused(service: LambdaService) -> None:
    bad = config("bad", "echo", timeout=3, environment={"AWS_LAMBDA_FUNCTION_NAME": "x"})
    with pytest.raises(ValueError, match="reserved environment variables: AWS_LAMBDA_FUNC"):
        service.register([bad])


def test_concurrency_stops_at_the_reserved_limit_and_the_rest_is_throttled(
    service: LambdaService,
) -> None:
    # Given a function that may run twice at once (the local default)
    service.register([config("slow", "sleep", timeout=10)])
    results: list[Any] = []

    def call() -> None:
        try:
            results.append(invoke(service, "slow", {"seconds": 1.0}))
        except FunctionThrottled as exc:
            results.append(exc)

    # When three invocations arrive together
    threads = [threading.Thread(target=call) for _ in range(3)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join()

    # Then two ran, in two environments, and the third was refused as Lambda refuses it
    throttled = [r for r in results if isinstance(r, FunctionThrottled)]
    ran = [r for r in results if isinstance(r, InvocationResult)]
    assert len(throttled) == 1 and len(ran) == 2
    assert len({body(r)["pid"] for r in ran}) == 2
    stats = service.stats()["slow"]
    assert stats["peak_concurrency"] == 2 and stats["throttles"] == 1


def test_a_reserved_concurrency_of_one_refuses_a_second_invocation_at_once(
    service: LambdaService,
) -> None:
    service.register([config("one-at-a-time", "sleep", timeout=10, reserved_concurrency=1)])
    blocker = threading.Thread(target=invoke, args=(service, "one-at-a-time", {"seconds": 1}))
    blocker.start()
    time.sleep(0.5)
    with pytest.raises(FunctionThrottled):
        invoke(service, "one-at-a-time", {"seconds": 0})
    blocker.join()


def test_a_function_its_stream_mappings_keep_busy_gets_as_many_environments(
    service: LambdaService,
) -> None:
    # Given functions without a reserved concurrency, one fed by mappings that can have
    # three batches in flight (ParallelizationFactor x shards), and one with a reserve
    service.register(
        [
            config("lanes", "sleep", timeout=10, unreserved_concurrency=3),
            config(
                "reserved", "sleep", timeout=10, reserved_concurrency=1, unreserved_concurrency=3
            ),
            config("plain", "sleep", timeout=10),
        ]
    )

    # Then each may have that many environments at once (a reserve always wins)
    assert [service.concurrency(n) for n in ("lanes", "reserved", "plain")] == [3, 1, 2]
    calls = [
        threading.Thread(target=invoke, args=(service, "lanes", {"seconds": 0.5})) for _ in range(3)
    ]
    for call in calls:
        call.start()
    for call in calls:
        call.join()
    assert service.stats()["lanes"]["throttles"] == 0
    assert service.stats()["lanes"]["peak_concurrency"] == 3


def test_the_functions_timeout_kills_the_invocation_with_lambdas_error_and_resets(
    service: LambdaService,
) -> None:
    service.register([config("slow", "sleep", timeout=1)])

    started = time.monotonic()
    result = invoke(service, "slow", {"seconds": 5})
    took = time.monotonic() - started

    # Then it ended at the timeout, as Invoke reports a timed-out function
    assert 1.0 <= took < 3.0
    assert result.function_error == "Unhandled"
    error = body(result)
    assert error["errorType"] == "Sandbox.Timedout"
    assert error["errorMessage"].startswith("RequestId: ")
    assert error["errorMessage"].endswith("Error: Task timed out after 1.00 seconds")
    # And the environment was discarded: the next invocation is a cold start
    assert result.discarded
    assert invoke(service, "slow", {"seconds": 0}).init_s is not None
    assert service.stats()["slow"]["timeouts"] == 1


def test_a_crash_discards_the_environment_and_a_function_error_keeps_it(
    service: LambdaService,
) -> None:
    service.register([config("crash", "crash", timeout=3), config("fail", "fail", timeout=3)])

    crashed = invoke(service, "crash", {"code": 3})
    failed = invoke(service, "fail", {"why": "testing"})
    again = invoke(service, "fail", {"why": "again"})

    assert crashed.function_error == "Unhandled" and crashed.discarded
    assert body(crashed)["errorType"] == "Runtime.ExitError"
    assert body(crashed)["errorMessage"].endswith("Runtime exited with error: exit status 3")
    # A function error is the handler's exception, in the Python runtime's shape
    assert failed.function_error == "Unhandled" and not failed.discarded
    assert body(failed)["errorType"] == "ValueError"
    assert body(failed)["errorMessage"] == "failed on purpose: testing"
    assert again.init_s is None  # the same, warm environment
    assert service.stats()["crash"]["crashes"] == 1
    assert service.stats()["fail"]["function_errors"] == 2


def test_a_runtime_that_dies_is_seen_dead_even_if_a_child_holds_its_pipes(
    service: LambdaService,
) -> None:
    service.register([config("forker", "fork_and_die", timeout=20)])

    started = time.monotonic()
    result = invoke(service, "forker", {})

    assert body(result)["errorType"] == "Runtime.ExitError"
    assert body(result)["errorMessage"].endswith("exit status 5")
    assert time.monotonic() - started < 5  # not the function's 20 s timeout


def test_an_environment_is_frozen_between_invocations(
    service: LambdaService, tmp_path: Path
) -> None:
    # Given a handler that leaves a thread ticking into a file
    service.register([config("ticker", "background", timeout=3)])
    ticks = tmp_path / "ticks"
    pid = body(invoke(service, "ticker", {"path": str(ticks)}))["pid"]

    # When the invocation has returned
    time.sleep(0.3)
    frozen_at = len(ticks.read_text().splitlines())
    time.sleep(0.5)

    # Then the process is stopped and its thread made no progress
    assert process_state(pid) == "T"
    assert len(ticks.read_text().splitlines()) == frozen_at

    # And the next invocation thaws it: the thread runs on
    invoke(service, "ticker", {"path": str(ticks)})
    assert process_state(pid) == "T"  # frozen again once it returned
    assert len(ticks.read_text().splitlines()) >= frozen_at


def test_a_process_the_handler_started_is_frozen_and_ended_with_its_environment(
    service: LambdaService, tmp_path: Path
) -> None:
    # Given a handler that starts a child process, which ticks into a file
    service.register([config("spawner", "spawn", timeout=1)])
    ticks = tmp_path / "ticks"
    child = body(invoke(service, "spawner", {"path": str(ticks)}))["child"]

    # When the invocation has returned, the child is frozen with the environment
    time.sleep(0.3)
    assert process_state(child) == "T"
    frozen_at = ticks.read_text().count("t")
    time.sleep(0.3)
    assert ticks.read_text().count("t") == frozen_at

    # And when an invocation times out, what it started ends with it
    timed_out = invoke(service, "spawner", {"path": str(tmp_path / "b"), "then_sleep": 5})
    assert body(timed_out)["errorType"] == "Sandbox.Timedout"
    time.sleep(0.3)
    assert not Path(f"/proc/{child}").exists() or process_state(child) == "Z"


def test_an_invocation_ended_from_outside_reports_a_crash_or_a_timeout(
    service: LambdaService,
) -> None:
    # Given an invocation running in an environment
    service.register([config("slow", "sleep", timeout=30)])
    results: list[InvocationResult] = []
    runner = threading.Thread(
        target=lambda: results.append(invoke(service, "slow", {"seconds": 20}))
    )
    runner.start()
    deadline = time.monotonic() + 10
    while not any(e.status.value == "invoking" and e.pid for e in service.environments()):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    (environment,) = service.environments()

    # When the chaos layer ends it as a timeout
    time.sleep(0.2)
    assert environment.force("timeout")
    runner.join(10)

    # Then Invoke answers Lambda's timeout error at once, and the environment is gone
    assert body(results[0])["errorType"] == "Sandbox.Timedout"
    assert results[0].duration_s < 5
    assert service.environments() == []
