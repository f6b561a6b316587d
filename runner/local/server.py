"""The embedded local stack: moto server + the service's own template + local pollers.

`LocalStack.start()` packages the service with `sls package` (cached), starts moto's
ThreadedMotoServer on 127.0.0.1, creates the packaged template in moto's CloudFormation
and then supplies what moto cannot run without Docker:

- the retry state machine is re-created (same name, ARN and definition) in moto's
  executing Step Functions backend: CloudFormation puts it in the non-executing one;
- every function of the stack is registered with a `LambdaDispatcher`, so Step
  Functions' `lambda:invoke` (and any Invoke call) runs the Python handler in-process;
- each event source mapping of the template becomes a `StreamPoller`, each schedule a
  `ScheduledFunction` (its rate can be overridden for demos).

The process environment is set as the functions' own (from the template, as resolved by
CloudFormation) plus the endpoint, so handlers, the client and the CLI find the stack.
Moto's state is process-global: one LocalStack per process at a time.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import re
import sys
import threading
import time
import urllib.request
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from runner.local import stack as cfn
from runner.local.lambdas import LambdaDispatcher, LambdaHandler
from runner.local.poller import DEFAULT_POLL_INTERVAL, StreamPoller
from runner.local.scheduler import ScheduledFunction, rate_seconds
from runner.local.template import ROOT, package_service

log = logging.getLogger(__name__)

DEFAULT_STAGE = "local"
DEFAULT_REGION = "us-east-1"
# Moto's default account; every ARN the stack makes has it.
ACCOUNT = "123456789012"
DEMO_TASK_MODULES = "runner.local.demo_tasks"
# Never real credentials: moto accepts anything, and nothing here may reach AWS.
DUMMY_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
}
# What the moto server must do for the stack: run state machines, and no Docker Lambdas.
MOTO_CONFIG = {"stepfunctions": {"execute_state_machine": True}, "lambda": {"use_docker": False}}
_MOTO_DEFAULTS = {
    "stepfunctions": {"execute_state_machine": False},
    "lambda": {"use_docker": True},
}
# Inherited variables that would point boto3 elsewhere or switch on X-Ray.
_SCRUBBED_ENV = ("AWS_PROFILE", "AWS_LAMBDA_FUNCTION_NAME", "_X_AMZN_TRACE_ID")
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
    "TASK_RUNNER_TASK_MODULES",
)


class LocalStackError(Exception):
    """The local stack could not start, or did not settle in time."""


@contextlib.contextmanager
def serialised_dynamodb() -> Iterator[None]:
    """One lock around moto's DynamoDB (and Streams) request handling.

    Unserialised, two racing conditional claims can both win. Only these handlers are
    locked: a lock around the whole server deadlocks when a Lambda handler running
    inside a request calls back into the server.
    """
    from moto.dynamodb.responses import DynamoHandler
    from moto.dynamodbstreams.responses import DynamoDBStreamsHandler

    lock = threading.RLock()
    originals = [(cls, cls.call_action) for cls in (DynamoHandler, DynamoDBStreamsHandler)]

    def locked(original: Callable[[Any], Any]) -> Callable[[Any], Any]:
        def call_action(self: Any) -> Any:
            with lock:
                return original(self)

        return call_action

    for cls, original in originals:
        setattr(cls, "call_action", locked(original))  # noqa: B010 (mypy: method assign)
    try:
        yield
    finally:
        for cls, original in originals:
            setattr(cls, "call_action", original)  # noqa: B010


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


def resolve_handler(spec: str) -> LambdaHandler:
    """`handler.process_stream` → the function, imported from the repository."""
    module_name, _, attribute = spec.rpartition(".")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    handler: LambdaHandler = getattr(importlib.import_module(module_name), attribute)
    return handler


def _moto_api(endpoint_url: str, path: str, body: dict[str, Any] | None = None) -> None:
    request = urllib.request.Request(
        f"{endpoint_url}/moto-api/{path}",
        data=json.dumps(body or {}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()


@dataclass(frozen=True)
class FunctionInfo:
    """A Lambda function of the stack as moto holds it."""

    name: str
    arn: str
    handler: str
    timeout: float
    environment: dict[str, str]


@dataclass
class LocalStack:
    """A running local stack; build it with `LocalStack.start()`."""

    endpoint_url: str
    port: int
    stage: str
    region: str
    created: cfn.LocalStack
    functions: dict[str, FunctionInfo]  # by logical id
    env: dict[str, str]  # what a client in another process needs (see `exports`)
    pollers: list[StreamPoller] = field(default_factory=list)
    schedules: list[ScheduledFunction] = field(default_factory=list)
    dispatcher: LambdaDispatcher = field(default_factory=LambdaDispatcher)
    started_in: float = 0.0

    # --- starting ----------------------------------------------------------------------

    @classmethod
    @contextlib.contextmanager
    def start(
        cls,
        *,
        port: int = 0,
        stage: str = DEFAULT_STAGE,
        region: str = DEFAULT_REGION,
        service_dir: Path = ROOT,
        sweep_interval: float | None = None,
        poll_interval: float = DEFAULT_POLL_INTERVAL,
        task_modules: str = DEMO_TASK_MODULES,
        log_level: str | None = None,
    ) -> Iterator[LocalStack]:
        """Package, start and wire everything; stop it all when the block ends."""
        started = time.perf_counter()
        package_dir = package_service(service_dir, stage=stage, region=region)
        base_env = {
            **DUMMY_CREDENTIALS,
            "AWS_REGION": region,
            "AWS_DEFAULT_REGION": region,
            "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
        }
        with contextlib.ExitStack() as exits:
            exits.enter_context(patched_environ(base_env, remove=_SCRUBBED_ENV))
            exits.enter_context(serialised_dynamodb())
            exits.enter_context(_quiet_moto())
            from moto.server import ThreadedMotoServer

            server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
            server.start()
            exits.callback(server.stop)
            host, real_port = server.get_host_and_port()
            endpoint = f"http://{host}:{real_port}"
            # Moto's Step Functions executor calls back to localhost:$MOTO_PORT.
            exits.enter_context(patched_environ({"MOTO_PORT": str(real_port)}))
            _moto_api(endpoint, "reset")
            exits.callback(_moto_api, endpoint, "config", _MOTO_DEFAULTS)
            # Functions must land in the Docker-less backend, so this precedes the stack.
            _moto_api(endpoint, "config", {"lambda": MOTO_CONFIG["lambda"]})
            created = cfn.create_stack(
                package_dir,
                endpoint_url=endpoint,
                stack_name=f"task-runner-{stage}",
                region=region,
            )
            session = boto3.Session(region_name=region)
            functions = _functions(session, endpoint, region, created)
            _recreate_state_machines(
                session,
                endpoint,
                region,
                created,
                cfn.load_packaged_template(package_dir),
                functions,
            )
            env = _function_environment(functions)
            env.update(
                base_env,
                AWS_ENDPOINT_URL=endpoint,
                TASK_RUNNER_TASK_MODULES=task_modules,
                # Tracing would try to reach an X-Ray daemon.
                POWERTOOLS_TRACE_DISABLED="true",
            )
            if log_level:
                env["POWERTOOLS_LOG_LEVEL"] = log_level
            exits.enter_context(patched_environ(env))
            _verify_sender(session, endpoint, region, env.get("TASK_RUNNER_SENDER_EMAIL"))
            _reset_app()
            exits.callback(_reset_app)

            local = cls(
                endpoint_url=endpoint,
                port=real_port,
                stage=stage,
                region=region,
                created=created,
                functions=functions,
                env=env,
            )
            for info in functions.values():
                local.dispatcher.register(info.name, resolve_handler(info.handler), info.timeout)
            exits.enter_context(local.dispatcher.installed())
            local._start_pollers(session, poll_interval)
            local._start_schedules(sweep_interval)
            exits.callback(local._stop_workers)
            local.started_in = time.perf_counter() - started
            yield local

    def _start_pollers(self, session: boto3.Session, poll_interval: float) -> None:
        streams = session.client("dynamodbstreams", endpoint_url=self.endpoint_url)
        sqs = session.client("sqs", endpoint_url=self.endpoint_url)
        dynamodb = session.client("dynamodb", endpoint_url=self.endpoint_url)
        for mapping in self.created.stream_mappings:
            table = self.created.resources[mapping.source_logical_id]
            stream_arn = dynamodb.describe_table(TableName=table)["Table"]["LatestStreamArn"]
            shards = streams.describe_stream(StreamArn=stream_arn)["StreamDescription"]["Shards"]
            function = self.functions[mapping.function_logical_id]
            for shard in shards:
                poller = StreamPoller(
                    mapping,
                    resolve_handler(mapping.handler),
                    streams=streams,
                    sqs=sqs,
                    stream_arn=stream_arn,
                    shard_id=shard["ShardId"],
                    function_arn=function.arn,
                    timeout_seconds=function.timeout,
                    region=self.region,
                    poll_interval=poll_interval,
                )
                poller.start()
                self.pollers.append(poller)

    def _start_schedules(self, interval: float | None) -> None:
        for schedule in self.created.schedules:
            function = self.functions[schedule.function_logical_id]
            scheduled = ScheduledFunction(
                resolve_handler(schedule.handler),
                function_name=function.name,
                rule_name=self.created.resources.get(schedule.logical_id, schedule.logical_id),
                interval=interval if interval is not None else rate_seconds(schedule.expression),
                timeout_seconds=function.timeout,
                region=self.region,
                account=ACCOUNT,
            )
            scheduled.start()
            self.schedules.append(scheduled)

    def _stop_workers(self) -> None:
        for scheduled in self.schedules:
            scheduled.stop()
        for poller in self.pollers:
            poller.stop()

    # --- what clients need -------------------------------------------------------------

    @property
    def table_name(self) -> str:
        return self.env["AWS_DYNAMO_DB_TABLE_NAME"]

    @property
    def state_machine_arn(self) -> str:
        return self.env["TASK_RUNNER_STATE_MACHINE_ARN"]

    @property
    def export_bucket(self) -> str:
        return self.env["TASK_RUNNER_EXPORT_BUCKET"]

    @property
    def outputs(self) -> dict[str, str]:
        return self.created.outputs

    def client(self, service: str) -> Any:
        """A boto3 client for this stack's endpoint."""
        return boto3.client(  # type: ignore[call-overload]
            service, endpoint_url=self.endpoint_url, region_name=self.region
        )

    def exports(self) -> list[str]:
        """`export NAME=value` lines for a shell that should talk to this stack."""
        return [f"export {name}={self.env[name]}" for name in EXPORTED if name in self.env]

    # --- waiting -----------------------------------------------------------------------

    def caught_up(self) -> bool:
        """Every poller has read to the end of its stream and delivered what it read."""
        return all(poller.caught_up for poller in self.pollers)

    def running_executions(self) -> list[dict[str, Any]]:
        sfn = self.client("stepfunctions")
        found: list[dict[str, Any]] = sfn.list_executions(
            stateMachineArn=self.state_machine_arn, statusFilter="RUNNING"
        )["executions"]
        return found

    def tasks(self) -> list[dict[str, Any]]:
        """Every item of the tasks table, as plain values."""
        from runner.items import deserialize_image

        dynamodb = self.client("dynamodb")
        items: list[dict[str, Any]] = []
        for page in dynamodb.get_paginator("scan").paginate(TableName=self.table_name):
            items += [deserialize_image(item) for item in page.get("Items", [])]
        return items

    def wait_until_settled(
        self,
        task_ids: set[str] | None = None,
        *,
        timeout: float = 60.0,
        interval: float = 0.1,
        on_poll: Callable[[list[dict[str, Any]]], None] | None = None,
    ) -> list[dict[str, Any]]:
        """Wait until every task (or those named) is final and nothing is in flight.

        Final: DONE, or FAILED with nothing left to retry it. In flight: stream records
        not yet delivered, or retry executions still RUNNING. Returns the tasks.
        """
        deadline = time.monotonic() + timeout
        while True:
            tasks = self.tasks()
            if task_ids is not None:
                tasks = [t for t in tasks if t.get("id") in task_ids]
            if on_poll is not None:
                on_poll(tasks)
            present = {t.get("id") for t in tasks}
            if (
                (task_ids is None or task_ids <= present)
                and all(is_settled(t) for t in tasks)
                and self.caught_up()
                and not self.running_executions()
            ):
                return tasks
            if time.monotonic() > deadline:
                waiting = sorted(str(t.get("id")) for t in tasks if not is_settled(t))
                raise LocalStackError(f"not settled after {timeout:.0f} s: {waiting}")
            time.sleep(interval)


def is_settled(task: Mapping[str, Any]) -> bool:
    """DONE, or FAILED for good (not retryable, or its retries exhausted)."""
    if task.get("status") == "DONE":
        return True
    if task.get("status") != "FAILED":
        return False
    return task.get("retryable") is not True or task.get("retries_exhausted") is True


def _reset_app() -> None:
    from runner.app import get_app

    get_app.cache_clear()


@contextlib.contextmanager
def _quiet_moto() -> Iterator[None]:
    """No per-request access log, no warnings for the resource types moto skips."""
    # Moto's Step Functions logs every failed execution as an error: routine here.
    quiet = {
        "werkzeug": logging.ERROR,
        "moto": logging.ERROR,
        "moto.stepfunctions": logging.CRITICAL,
    }
    loggers = [logging.getLogger(name) for name in quiet]
    levels = [logger.level for logger in loggers]
    for logger, level in zip(loggers, quiet.values(), strict=True):
        logger.setLevel(level)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="No Moto CloudFormation support")
        warnings.filterwarnings("ignore", message="Tried to parse")
        try:
            yield
        finally:
            for logger, level in zip(loggers, levels, strict=True):
                logger.setLevel(level)


def _functions(
    session: boto3.Session, endpoint: str, region: str, created: cfn.LocalStack
) -> dict[str, FunctionInfo]:
    """The stack's functions, read back from moto's Lambda (handler, timeout, env)."""
    lambdas = session.client("lambda", endpoint_url=endpoint, region_name=region)
    found = {}
    for logical_id, physical_id in created.resources.items():
        if not physical_id or not logical_id.endswith("LambdaFunction"):
            continue
        config = lambdas.get_function_configuration(FunctionName=physical_id)
        found[logical_id] = FunctionInfo(
            name=config["FunctionName"],
            arn=config["FunctionArn"],
            handler=config["Handler"],
            timeout=float(config.get("Timeout", 3)),
            environment=dict(config.get("Environment", {}).get("Variables", {})),
        )
    return found


def _function_environment(functions: Mapping[str, FunctionInfo]) -> dict[str, str]:
    """The union of the functions' environments; one process runs them all."""
    env: dict[str, str] = {}
    for info in functions.values():
        for name, value in info.environment.items():
            if env.setdefault(name, value) != value:
                raise LocalStackError(
                    f"functions disagree on {name} ({env[name]!r} vs {value!r}); "
                    "the local stack runs them in one process"
                )
    return env


def _recreate_state_machines(
    session: boto3.Session,
    endpoint: str,
    region: str,
    created: cfn.LocalStack,
    template: dict[str, Any],
    functions: Mapping[str, FunctionInfo],
) -> None:
    """Re-create the stack's state machines in moto's executing backend (same ARN).

    The definition is built from the packaged template (its `Definition` with the
    `DefinitionSubstitutions` resolved against the created stack), not read back from
    moto: moto's `Fn::Sub` runs `string.Template`, which turns the ASL's `$$.` context
    paths into `$.`.
    """
    sfn = session.client("stepfunctions", endpoint_url=endpoint, region_name=region)
    machines = []
    for logical_id, resource in template["Resources"].items():
        if resource.get("Type") != "AWS::StepFunctions::StateMachine":
            continue
        arn = created.resources[logical_id]
        described = sfn.describe_state_machine(stateMachineArn=arn)
        definition = described["definition"]
        props = resource["Properties"]
        if isinstance(props.get("Definition"), dict):
            values = {
                name: _resolve(value, created, functions)
                for name, value in props.get("DefinitionSubstitutions", {}).items()
            }
            definition = substitute_definition(json.dumps(props["Definition"], indent=2), values)
        machines.append((described, definition))
    _moto_api(endpoint, "config", {"stepfunctions": MOTO_CONFIG["stepfunctions"]})
    for described, definition in machines:
        arn = sfn.create_state_machine(
            name=described["name"],
            definition=definition,
            roleArn=described["roleArn"],
            type=described.get("type", "STANDARD"),
        )["stateMachineArn"]
        if arn != described["stateMachineArn"]:
            raise LocalStackError(f"re-created state machine has ARN {arn}")


_PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9_]*)\}")


def substitute_definition(text: str, values: Mapping[str, str]) -> str:
    """`${Name}` → value, as Step Functions' DefinitionSubstitutions does (nothing else)."""
    missing = sorted(set(_PLACEHOLDER.findall(text)) - set(values))
    if missing:
        raise LocalStackError(f"no DefinitionSubstitutions for {', '.join(missing)}")
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def _resolve(value: Any, created: cfn.LocalStack, functions: Mapping[str, FunctionInfo]) -> str:
    """A substitution value (literal, `Ref` or `Fn::GetAtt ... Arn`) against the stack."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Ref" in value:
        return created.resources[value["Ref"]]
    if isinstance(value, dict) and "Fn::GetAtt" in value:
        target = value["Fn::GetAtt"]
        logical_id, attribute = target if isinstance(target, list) else target.split(".", 1)
        if attribute == "Arn" and logical_id in functions:
            return functions[logical_id].arn
        physical = created.resources.get(logical_id, "")
        if attribute == "Arn" and physical.startswith("arn:"):
            return physical
    raise LocalStackError(f"cannot resolve {value!r} locally")


def _verify_sender(session: boto3.Session, endpoint: str, region: str, sender: str | None) -> None:
    """SES refuses to send from an unverified address; verify the configured sender."""
    if sender:
        ses = session.client("ses", endpoint_url=endpoint, region_name=region)
        ses.verify_email_identity(EmailAddress=sender)
