"""What the local stack's processes run with: credentials, exports, task modules.

Each Lambda function runs with its own variables (runner.local.lambda_env builds them
from the template's, this overlay, and Lambda's reserved ones); the stack's own process
and the shell a user opens beside it get `EXPORTED`, what a client needs.
"""

from __future__ import annotations

import contextlib
import importlib
import os
from collections.abc import Iterator, Mapping

DEMO_TASK_MODULES = "runner.local.demo_tasks"
TASK_MODULES_ENV = "TASK_RUNNER_TASK_MODULES"
# Never real credentials: moto accepts anything, and nothing here may reach AWS.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# Inherited variables that would point boto3 elsewhere or switch on X-Ray.
SCRUBBED_ENV = ("AWS_PROFILE", "AWS_LAMBDA_FUNCTION_NAME", "_X_AMZN_TRACE_ID")
# The variables printed for another terminal (`export ...`), in this order.
EXPORTED = (
    "AWS_ENDPOINT_URL",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_DYNAMO_DB_TABLE_NAME",
    "TASK_RUNNER_STATE_MACHINE_ARN",
    "TASK_RUNNER_EXPORT_BUCKET",
    "TASK_RUNNER_SENDER_EMAIL",
    # run-task of an EXPORT_DB in that shell mails only whom the stack's functions may.
    "TASK_RUNNER_EXPORT_RECIPIENTS",
    # The CLI's `sweep` replays the stream batches the mappings gave up on, as `sweep` does.
    "TASK_RUNNER_FAILED_BATCH_QUEUE_URL",
    # create-task --delay/--run-at sets a timer; list-schedules reads the recurring group.
    "TASK_RUNNER_TIMER_QUEUE_URL",
    "TASK_RUNNER_SCHEDULER_ROLE_ARN",
    "TASK_RUNNER_DELAY_SCHEDULE_GROUP",
    "TASK_RUNNER_RECURRING_SCHEDULE_GROUP",
    # create-task and get-task --payloads put and read large payloads there.
    "TASK_RUNNER_PAYLOAD_BUCKET",
    "TASK_RUNNER_TASK_MODULES",
    # The functions' metrics namespace: the dashboard reads its per-minute figures there.
    "POWERTOOLS_METRICS_NAMESPACE",
)


class TaskModulesError(Exception):
    """A module named in TASK_RUNNER_TASK_MODULES does not import or register."""


def base_environment(region: str) -> dict[str, str]:
    """Dummy credentials and the region, for every process of the stack."""
    return {
        **DUMMY_CREDENTIALS,
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
    }


def function_overlay(
    region: str, endpoint: str, modules: str, log_level: str | None
) -> dict[str, str]:
    """What every execution environment gets on top of its function's own variables."""
    overlay = {
        **base_environment(region),
        "AWS_ENDPOINT_URL": endpoint,
        TASK_MODULES_ENV: modules,
        # Tracing would try to reach an X-Ray daemon.
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
    if log_level:
        overlay["POWERTOOLS_LOG_LEVEL"] = log_level
    heartbeat = os.environ.get("TASK_RUNNER_HEARTBEAT_SECONDS")
    if heartbeat:  # the demo's: a cancel reaches a running handler in a second
        overlay["TASK_RUNNER_HEARTBEAT_SECONDS"] = heartbeat
    return overlay


def task_modules(user_modules: str | None) -> str:
    """The demo tasks plus the user's (TASK_RUNNER_TASK_MODULES), checked to import and
    to register together, so a module that does not gets a clear error before the stack
    starts."""
    from tasks import build_registry

    names = [DEMO_TASK_MODULES]
    for name in (m.strip() for m in (user_modules or "").split(",")):
        if name and name not in names:
            names.append(name)
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            raise TaskModulesError(
                f"{TASK_MODULES_ENV}: cannot import {name!r}: {type(exc).__name__}: {exc}"
            ) from exc
    try:
        build_registry(names)
    except Exception as exc:
        raise TaskModulesError(f"{TASK_MODULES_ENV}={','.join(names)}: {exc}") from exc
    return ",".join(names)


@contextlib.contextmanager
def patched_environ(values: Mapping[str, str], remove: tuple[str, ...] = ()) -> Iterator[None]:
    """Set (and remove) process environment variables for the block, then restore them."""
    saved = {name: os.environ.get(name) for name in (*values, *remove)}
    for name in remove:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
