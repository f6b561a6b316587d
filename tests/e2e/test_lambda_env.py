"""Local Lambda execution environments live as Lambda's do (runner.local.lambda_service).

Real worker processes running the toy handlers of tests/e2e/lambda_handlers.py: cold
start then warm reuse, each function's own variables, concurrency up to the reserved
limit, the function's timeout enforced with Lambda's error, freezing between
invocations, and a crash or timeout discarding the environment.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from runner.local.lambda_config import FunctionConfig
from runner.local.lambda_invoke import FunctionThrottled, InvalidRequestContent, RequestTooLarge
from runner.local.lambda_protocol import InvocationResult
from runner.local.lambda_service import LambdaService
from runner.local.sfn_fidelity import step_functions_error
from runner.local.template import ROOT

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


def test_a_function_runs_on_the_runtimes_python_with_only_what_its_zip_holds(
    service: LambdaService,
) -> None:
    # Given a function (its handler's module is not in the zip: the service copies it in)
    service.register([config("inspect", "inspect", timeout=10)])
    modules = {
        # What the zip holds, and requirements.txt's packages
        "handler": True,
        "runner.executor": True,
        "tasks": True,
        "pydantic": True,
        "aws_lambda_powertools": True,
        "boto3": True,
        # The local stack, the dev tools, the tests' helpers: not in the zip
        "runner.local.chaos": False,
        "runner.local.lambda_worker": False,
        "moto": False,
        "pytest": False,
        "hypothesis": False,
        "tests.helpers": False,
        # Gone from Python 3.12's standard library
        "distutils": False,
    }

    seen = body(invoke(service, "inspect", {"modules": list(modules)}))

    # Then it runs on Python 3.12 (the runtime the template names), in its task root,
    # with nothing of the repository or of this process's PYTHONPATH importable
    if os.environ.get("TASK_RUNNER_LAMBDA_PYTHON"):
        assert seen["version"] == [3, 12]
    assert seen["importable"] == modules
    task_root = service.code.task_root
    assert seen["cwd"] == str(task_root) and seen["path"][0] == str(task_root)
    assert not any(str(ROOT) in entry for entry in seen["path"])
    assert not (task_root / "runner" / "local" / "chaos.py").exists()


def test_a_function_that_sets_a_reserved_variable_is_refused(service: LambdaService) -> None:
    bad = config("bad", "echo", timeout=3, environment={"AWS_LAMBDA_FUNCTION_NAME": "x"})
    with pytest.raises(ValueError, match="reserved environment variables: AWS_LAMBDA_FUNC"):
        service.register([bad])


def concurrently(
    service: LambdaService, calls: list[tuple[str, dict[str, Any]]]
) -> list[InvocationResult | FunctionThrottled]:
    """Start the invocations 0.1 s apart; what each answered, in that order."""
    results: list[InvocationResult | FunctionThrottled | None] = [None] * len(calls)

    def call(index: int, name: str, event: dict[str, Any]) -> None:
        try:
            results[index] = invoke(service, name, event)
        except FunctionThrottled as exc:
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i, *c)) for i, c in enumerate(calls)]
    for thread in threads:
        thread.start()
        time.sleep(0.1)
    for thread in threads:
        thread.join()
    return [r for r in results if r is not None]


def test_functions_without_a_reserve_share_the_account_pool_and_wait_rather_than_fail() -> None:
    # Given functions without a reserved concurrency, and a local account pool of two
    service = LambdaService(account_concurrency=2)
    try:
        service.register([config("slow", "sleep", timeout=10), config("other", "echo", timeout=3)])
        assert service.concurrency("slow") == 2

        # When three invocations arrive together
        results = concurrently(service, [("slow", {"seconds": 1.0})] * 3)

        # Then all three ran (AWS's pool of 1,000 would have run them): the third waited
        # for an environment instead of being refused, and no more than two ran at once
        assert all(isinstance(r, InvocationResult) and not r.function_error for r in results)
        assert len({body(r)["pid"] for r in results if isinstance(r, InvocationResult)}) == 2
        stats = service.stats()["slow"]
        assert (stats["throttles"], stats["queued"], stats["peak_concurrency"]) == (0, 1, 2)

        # And another function gets room by retiring an idle environment of the first
        assert not invoke(service, "other", {}).function_error
        assert len(service.environments()) == 2
        assert service.stats()["other"]["throttles"] == 0
    finally:
        service.stop()


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

    # And the next invocation (0.3 s long) thaws it: the thread runs on while it does
    invoke(service, "ticker", {"path": str(ticks), "then_sleep": 0.3})
    assert process_state(pid) == "T"  # frozen again once it returned
    assert len(ticks.read_text().splitlines()) > frozen_at


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


def test_a_timeout_moved_closer_lets_the_handler_run_until_it_then_times_out(
    service: LambdaService, tmp_path: Path
) -> None:
    # Given an invocation ticking into a file for 5 s, its function's timeout 30 s
    service.register([config("ticker", "tick", timeout=30)])
    ticks = tmp_path / "ticks"
    results: list[InvocationResult] = []
    runner = threading.Thread(
        target=lambda: results.append(invoke(service, "ticker", {"path": str(ticks), "seconds": 5}))
    )
    runner.start()
    deadline = time.monotonic() + 10
    while not ticks.exists():
        assert time.monotonic() < deadline
        time.sleep(0.02)
    (environment,) = service.environments()

    # When the chaos layer moves its deadline to 1 s from now
    moved_at = time.monotonic()
    assert environment.force("timeout", after=1.0)
    at_force = len(ticks.read_text().splitlines())
    runner.join(10)
    ended = time.monotonic() - moved_at

    # Then the handler ran on until the new deadline, and was timed out there
    assert 0.9 <= ended < 2.0, ended
    assert len(ticks.read_text().splitlines()) - at_force >= 10  # ~20 ticks of 50 ms
    assert body(results[0])["errorType"] == "Sandbox.Timedout"
    assert results[0].discarded and service.environments() == []


def test_invoke_refuses_a_payload_that_is_not_json_or_too_large_before_using_an_environment(
    service: LambdaService,
) -> None:
    service.register([config("echo", "echo", timeout=3), config("big", "big", timeout=10)])

    # A body that is not JSON, or over Invoke's 6,291,456 bytes, is refused: no environment
    with pytest.raises(InvalidRequestContent, match="Could not parse request body into json"):
        service.invoke("echo", b"nope")
    with pytest.raises(RequestTooLarge, match="7000009 byte payload is too large"):
        service.invoke("echo", json.dumps({"x": "y" * 7_000_000}).encode())
    assert service.environments() == []
    assert service.stats()["echo"]["cold_starts"] == 0

    # And a response over 6 MB is Lambda's function error; the environment is kept
    too_big = invoke(service, "big", {"bytes": 6_300_000})
    assert too_big.function_error == "Unhandled"
    assert body(too_big)["errorType"] == "Function.ResponseSizeTooLarge"
    assert invoke(service, "big", {"bytes": 10}).init_s is None  # warm


def test_a_process_that_left_the_workers_group_is_frozen_and_ended_too(
    service: LambdaService, tmp_path: Path
) -> None:
    # Given a handler that starts a child in a session of its own (out of its group)
    service.register([config("escaper", "spawn", timeout=1)])
    ticks = tmp_path / "ticks"
    child = body(invoke(service, "escaper", {"path": str(ticks), "new_session": True}))["child"]

    # When the invocation has returned, the child is frozen with the environment
    deadline = time.monotonic() + 2
    while process_state(child) != "T":
        assert time.monotonic() < deadline, process_state(child)
        time.sleep(0.01)
    frozen_at = ticks.read_text().count("t")
    time.sleep(0.3)
    assert ticks.read_text().count("t") == frozen_at

    # And it runs again while an invocation does, and ends when the environment does
    timed_out = invoke(service, "escaper", {"path": str(tmp_path / "b"), "then_sleep": 5})
    assert body(timed_out)["errorType"] == "Sandbox.Timedout"
    assert ticks.read_text().count("t") > frozen_at
    time.sleep(0.3)
    assert not Path(f"/proc/{child}").exists() or process_state(child) == "Z"


STACK_KILLED = """
import json, sys, threading
from runner.local.lambda_config import FunctionConfig
from runner.local.lambda_service import LambdaService
service = LambdaService()
spawn = "tests.e2e.lambda_handlers.spawn"
service.register([FunctionConfig(name=n, handler=spawn, timeout=60) for n in ("f", "g")])
frozen = {"path": sys.argv[1] + "-frozen"}
print(json.loads(service.invoke("f", json.dumps(frozen).encode()).payload)["child"], flush=True)
running = {"path": sys.argv[1] + "-running", "new_session": True, "then_sleep": 60}
service.invoke("g", json.dumps(running).encode())  # still running
"""


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:
        return b""


def test_what_a_handler_started_dies_when_the_stack_is_killed_outright(tmp_path: Path) -> None:
    # Given a process holding a Lambda service, whose handler started two children (one
    # in its group, frozen; one in a session of its own, running in a second invocation)
    holder = subprocess.Popen(
        [sys.executable, "-c", STACK_KILLED, str(tmp_path / "ticks")],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        children = _children_of(holder, tmp_path)
    finally:
        # When its process group is killed outright (kill -9 of `serve`'s group)
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()

    # Then both children are gone within a few seconds, not left stopped or running
    deadline = time.monotonic() + 5
    while any(Path(f"/proc/{c}").exists() and process_state(c) != "Z" for c in children):
        assert time.monotonic() < deadline, [process_state(c) for c in children]
        time.sleep(0.05)


def _children_of(holder: subprocess.Popen[str], tmp_path: Path) -> list[int]:
    assert holder.stdout is not None
    children = [int(holder.stdout.readline())]
    deadline = time.monotonic() + 10
    while len(children) < 2:  # the running one, by the file it ticks into
        assert time.monotonic() < deadline
        children += [
            int(p.parent.name)
            for p in Path("/proc").glob("[0-9]*/cmdline")
            if str(tmp_path / "ticks-running").encode() in _read(p)
        ]
        time.sleep(0.05)
    assert process_state(children[0]) == "T" and process_state(children[1]) != "T"
    return children


def test_an_invocation_past_its_functions_memory_is_ended_as_out_of_memory(
    service: LambdaService,
) -> None:
    service.register([config("small", "allocate", timeout=10, memory_mb=128)])

    # Within its memory it runs; past it, Lambda ends it (Step Functions: Lambda.Unknown)
    assert not invoke(service, "small", {"mb": 20, "seconds": 0.5}).function_error
    started = time.monotonic()
    result = invoke(service, "small", {"mb": 400, "seconds": 5})

    assert body(result)["errorType"] == "Runtime.OutOfMemory"
    assert body(result)["errorMessage"].endswith("Runtime exited with error: signal: killed")
    assert result.discarded and time.monotonic() - started < 4
    assert step_functions_error(result.payload.decode()) == "Lambda.Unknown"
