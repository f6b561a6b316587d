"""The embedded local stack: moto server + the service's own template + local pollers.

`LocalStack.start()` packages the service with `sls package` (cached), starts moto's
ThreadedMotoServer on 127.0.0.1 in a process of its own (runner.local.endpoint), creates
the packaged template in moto's CloudFormation and then supplies what moto cannot run
without Docker:

- the retry state machine is re-created (same name, ARN and definition) in moto's
  executing Step Functions backend: CloudFormation puts it in the non-executing one;
- every function of the stack is registered with the endpoint's Lambda service, which
  runs each invocation in an execution environment of the function's own: a worker
  process with the function's environment from the template plus the stack's overlay
  (endpoint, dummy credentials, task modules, tracing off) and Lambda's reserved
  variables (runner.local.lambda_env);
- each event source mapping of the template becomes a `StreamPoller`, each schedule a
  `ScheduledFunction` (its rate can be overridden for demos), in this process; both
  invoke their function through the endpoint's Lambda API;
- the tables' TTL (which moto's CloudFormation skips) is enabled and run
  (runner.local.ttl), and chaos faults (runner.local.chaos) are set from `faults` and
  the control endpoint (runner.local.control).

This process's environment is set to what a client of the stack needs (the endpoint,
the table, the state machine), so the demo's client and the CLI find the stack. One
LocalStack per process at a time (environment).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3

from runner.local import stack as cfn
from runner.local.chaos import STACK_SERVICES, FaultPlan, parse_faults
from runner.local.endpoint import EndpointProcess
from runner.local.lambda_runtime import module_files
from runner.local.lambdas import LambdaInvoker
from runner.local.motoserver import MOTO_CONFIG, moto_api
from runner.local.poller import DEFAULT_POLL_INTERVAL, StreamPoller
from runner.local.resources import (
    FunctionInfo,
    apply_time_to_live,
    client_environment,
    read_functions,
    recreate_state_machines,
    verify_sender,
)
from runner.local.scheduler import ScheduledFunction, rate_seconds
from runner.local.stack_control import StackControl
from runner.local.stack_env import (
    EXPORTED,
    SCRUBBED_ENV,
    TASK_MODULES_ENV,
    base_environment,
    function_overlay,
    patched_environ,
)
from runner.local.stack_env import (
    task_modules as resolve_task_modules,
)
from runner.local.template import ROOT, package_service
from runner.local.timers import LocalTimers, start_timers

log = logging.getLogger(__name__)

DEFAULT_STAGE = "local"
DEFAULT_REGION = "us-east-1"
# Moto's default account; every ARN the stack makes has it.
ACCOUNT = "123456789012"
# Seconds between an item's expiry and its TTL deletion (AWS: "typically within a few
# days"; short here so a user sees it; tests pass 0 or None, never).
DEFAULT_TTL_LAG_SECONDS = 60.0


class LocalStackError(Exception):
    """The local stack did not settle in time."""


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
    server: EndpointProcess | None = None  # the endpoint process (runner.local.endpoint)
    faults: FaultPlan = field(default_factory=lambda: FaultPlan(services=STACK_SERVICES))
    control: StackControl | None = None
    timers: LocalTimers | None = None  # SQS mappings and EventBridge Scheduler
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
        task_modules: str | None = None,
        log_level: str | None = None,
        faults: str = "",
        faults_seed: int | None = None,
        ttl_lag: float | None = DEFAULT_TTL_LAG_SECONDS,
        control_port: int = 0,
        verbose: bool = False,
    ) -> Iterator[LocalStack]:
        """Package, start and wire everything; stop it all when the block ends.

        `task_modules`: extra task modules, registered with the demo tasks (default:
        TASK_RUNNER_TASK_MODULES). `faults`: a chaos spec (runner.local.chaos), active
        from the start. `ttl_lag`: seconds after expiry until TTL deletes (None: never).
        """
        started = time.perf_counter()
        fault_list = parse_faults(faults)  # bad input fails before anything starts
        modules = resolve_task_modules(
            os.environ.get(TASK_MODULES_ENV) if task_modules is None else task_modules
        )
        package_dir = package_service(service_dir, stage=stage, region=region)
        base_env = base_environment(region)
        with contextlib.ExitStack() as exits:
            exits.enter_context(patched_environ(base_env, remove=SCRUBBED_ENV))
            server = EndpointProcess(
                port=port,
                env={**os.environ, **base_env},
                log_level="INFO" if verbose else "WARNING",
            )
            exits.callback(server.stop)
            endpoint = server.endpoint_url
            real_port = int(endpoint.rsplit(":", 1)[1])
            # Functions must land in the Docker-less backend, so this precedes the stack.
            moto_api(endpoint, "config", {"lambda": MOTO_CONFIG["lambda"]})
            created = cfn.create_stack(
                package_dir,
                endpoint_url=endpoint,
                stack_name=f"task-runner-{stage}",
                region=region,
            )
            template = cfn.load_packaged_template(package_dir)
            session = boto3.Session(region_name=region)
            functions = read_functions(session, endpoint, region, created, template)
            recreate_state_machines(session, endpoint, region, created, template, functions)
            apply_time_to_live(session, endpoint, region, created, template)
            server.ttl(ttl_lag)
            overlay = function_overlay(region, endpoint, modules, log_level)
            configs = [info.config(region, ACCOUNT).as_dict() for info in functions.values()]
            # The demo's and the user's task modules are not in the zip: copied in.
            server.register(configs, overlay, code=module_files(modules.split(",")))
            env = client_environment(functions, EXPORTED)
            env.update(base_env, AWS_ENDPOINT_URL=endpoint, **{TASK_MODULES_ENV: modules})
            exits.enter_context(patched_environ(env))
            verify_sender(session, endpoint, region, env.get("TASK_RUNNER_SENDER_EMAIL"))
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
                server=server,
            )
            local.control = StackControl(server, local.faults, local.pollers, port=control_port)
            exits.callback(local.control.stop)
            local._start_pollers(session, poll_interval)
            local._start_schedules(sweep_interval)
            # Last: the stack's own wiring (describe_table above) must not meet them.
            local.set_faults(",".join(map(str, fault_list)), faults_seed)
            exits.callback(local._stop_workers)
            local.timers = start_timers(
                session=session,
                endpoint=endpoint,
                region=region,
                account=ACCOUNT,
                template=template,
                resources=created.resources,
                functions=functions,
                task_modules=modules,
            )
            exits.callback(local.timers.stop)
            local.started_in = time.perf_counter() - started
            yield local

    def _invoker(self, function: FunctionInfo) -> LambdaInvoker:
        return LambdaInvoker(
            function.name,
            endpoint_url=self.endpoint_url,
            region=self.region,
            timeout_seconds=function.timeout,
        )

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
                    self._invoker(function),
                    streams=streams,
                    sqs=sqs,
                    stream_arn=stream_arn,
                    shard_id=shard["ShardId"],
                    function_arn=function.arn,
                    region=self.region,
                    poll_interval=poll_interval,
                    faults=self.faults,
                )
                poller.start()
                self.pollers.append(poller)

    def _start_schedules(self, interval: float | None) -> None:
        for schedule in self.created.schedules:
            function = self.functions[schedule.function_logical_id]
            scheduled = ScheduledFunction(
                self._invoker(function),
                function_name=function.name,
                rule_name=self.created.resources.get(schedule.logical_id, schedule.logical_id),
                interval=interval if interval is not None else rate_seconds(schedule.expression),
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

    # --- chaos and counters ------------------------------------------------------------

    def set_faults(self, spec: str, seed: int | None = None) -> dict[str, Any]:
        """Make `spec` the active faults (runner.local.chaos); raises FaultSpecError."""
        assert self.control is not None
        return self.control.set_faults(spec, seed)

    def fault_state(self) -> dict[str, Any]:
        assert self.control is not None
        return self.control.fault_state()

    def lambda_stats(self) -> dict[str, Any]:
        """Per function: invocations, cold starts, timeouts, crashes, environments."""
        assert self.server is not None
        return self.server.lambda_stats()

    # --- what clients need -------------------------------------------------------------

    @property
    def server_pid(self) -> int:
        assert self.server is not None
        return self.server.pid

    def server_stats(self) -> dict[str, dict[str, float]]:
        """CPU seconds and calls per moto action in the endpoint since the last call."""
        assert self.server is not None
        return self.server.stats()

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

        Final: DONE, CANCELLED, or FAILED with nothing left to retry it. In flight: stream records
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
    """DONE, CANCELLED, or FAILED for good (not retryable, or its retries exhausted)."""
    if task.get("status") in ("DONE", "CANCELLED"):
        return True
    if task.get("status") != "FAILED":
        return False
    return task.get("retryable") is not True or task.get("retries_exhausted") is True


def _reset_app() -> None:
    from runner.app import get_app

    get_app.cache_clear()
