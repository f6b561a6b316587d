"""One simulated deployment: moto's DynamoDB (atomic, DynamoDB-sized, via the tests'
fidelity shim) with its stream, the simulated Step Functions, Lambda environments
running the real handler.py, a fault plan, a virtual clock and the ledger.

The world owns the hooks the other parts call: the fault client asks `fault_for`,
`crash`, `timeout`, `snapshot` and `log_write`; the task fixtures call the ledger
methods; Step Functions calls `run` (its Task resources).
"""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from runner.config import Settings
from runner.context import TaskContext
from runner.items import deserialize_image
from runner.local.motoserver import create_tasks_table
from runner.local.stream_records import lambda_record
from runner.payloads import REFERENCE_KEY, is_reference, staged_key, task_prefix
from tests.simulation import asl, sim_tasks
from tests.simulation.destinations import SqsService, StreamsClient, failure_message
from tests.simulation.faults import (
    FaultKind,
    FaultPlan,
    Firing,
    SimAwsClients,
    retry_budget,
)
from tests.simulation.fibers import Scheduler, SimClock, SimCrash
from tests.simulation.integrations import SfnIntegrations
from tests.simulation.lambdas import SIM_TASK_MODULE, LambdaClient, LambdaService
from tests.simulation.ledger import Ledger
from tests.simulation.stepfunctions import StepFunctionsClient, StepFunctionsService
from tests.simulation.streams import MappingQueue
from tests.simulation.timers import SchedulerService, TimerMapping
from tests.simulation.topology import ACCOUNT, REGION, Function, Topology

# The people and programs outside Lambda that run the runner's code.
PRODUCER = Function("Producer", "producer", "", 0, {})
CLI = Function("Cli", "cli", "", 0, {})


@dataclass
class TaskInfo:
    """A task the producer created (one incarnation of an id)."""

    id: str
    nonce: str
    type: str
    shape: str
    created_at: float
    deleted: bool = False
    final_when_deleted: bool = True


class RawClients:
    """Unfaulted clients to moto (the harness's own view, and the services' insides)."""

    def __init__(self, session: Any) -> None:
        self.dynamodb = session.client("dynamodb", region_name=REGION)
        self.streams = session.client("dynamodbstreams", region_name=REGION)
        self._session = session
        self._others: dict[str, Any] = {}

    def get(self, service: str) -> Any:
        if service == "dynamodb":
            return self.dynamodb
        if service not in self._others:
            self._others[service] = self._session.client(service, region_name=REGION)
        return self._others[service]


class World:
    def __init__(self, topology: Topology, raw: RawClients, *, seed: int, number: int) -> None:
        self.topology = topology
        self.raw = raw
        self.seed = seed
        self.rng = random.Random(seed)
        self.clock = SimClock()
        self.scheduler = Scheduler(self.clock)
        self.ledger = Ledger()
        self.faults = FaultPlan()
        self.budget = retry_budget()
        self.table = f"{topology.table.name}-{number}"
        self.stream_arn = create_tasks_table(raw.dynamodb, self.table)
        self._stream_read = 0
        self.physical = {
            topology.table.logical_id: self.table,
            f"{topology.table.logical_id}.StreamArn": self.stream_arn,
        }
        # When each stream record was written, by sequence number (virtual time).
        self.stream_times: dict[str, float] = {}
        self.sqs = SqsService(self.clock)
        for logical, properties in topology.queues.items():
            name = topology.resource_names.get(logical, f"sim-{logical.lower()}")
            queue = self.sqs.create_queue(name, dict(properties))
            self.physical[logical] = queue.url  # Ref: the queue's URL
            self.physical[f"{logical}.Arn"] = f"arn:aws:sqs:{REGION}:{ACCOUNT}:{name}"
            self.physical[f"{logical}.QueueName"] = name
        self.streams = StreamsClient(
            self.clock,
            self.stream_arn,
            lambda: self._moto_table().stream_shard,
            lambda seq: self.stream_times.get(seq, self.clock.t),
        )
        # The template's buckets (the payload bucket, the exports'), in moto's S3.
        for logical, kind in topology.resource_types.items():
            if kind == "AWS::S3::Bucket" and logical in ("PayloadBucket", "ExportBucket"):
                name = topology.resolve({"Ref": logical}, self.physical)
                raw.get("s3").create_bucket(Bucket=name)
                self.physical[logical] = name
        self._payloads: dict[str, Any] = {}
        self.sfn = StepFunctionsService(self.clock, random.Random(seed + 1), SfnIntegrations(self))
        for spec in topology.state_machines.values():
            values = {k: topology.resolve(v, self.physical) for k, v in spec.substitutions.items()}
            self.sfn.create_state_machine(
                spec.arn, spec.name, spec.definition_path.read_text(), values
            )
        self.lambdas = LambdaService(self.scheduler, self._settings_for, self._clients_for)
        self.queues = [MappingQueue(m, topology.mapped_function(m)) for m in topology.mappings]
        # EventBridge Scheduler's one-time schedules, and the timer queue's mapping.
        self.eventbridge = SchedulerService(self.clock, self.sqs)
        self.timers = [
            TimerMapping(self, m, self.physical[m.source_logical_id])
            for m in topology.queue_mappings
            if m.source_logical_id in self.physical
        ]
        # Recurring fires sent: the fire's task id -> its message body.
        self.fires: dict[str, str] = {}
        # Stalls (`actions.stall`): from, to.
        self.stalls: list[tuple[float, float]] = []
        for mapping_queue in self.queues:
            mapping_queue.on_failure = self._on_failure_for(mapping_queue)
        self.tasks: dict[str, TaskInfo] = {}
        self.items: dict[str, dict[str, Any] | None] = {}
        self.ttl_deleted: set[str] = set()
        self.sfn_actor: str | None = None
        self.sfn_choice: int | None = 0
        self.fault_stop_at: float | None = None
        self._pumped = 0
        # Environment variables set on every function (a scripted run's deployment choice).
        self.env_overrides: dict[str, str] = {}
        sim_tasks.bind(self)

    # --- wiring ------------------------------------------------------------------------

    def _settings_for(self, function: Function) -> Settings:
        if function in (PRODUCER, CLI):  # a person's shell: every function's variables
            env: dict[str, str] = {}
            for f in self.topology.functions.values():
                env.update(self.topology.environment(f, self.physical))
        else:
            env = self.topology.environment(function, self.physical)
        env["TASK_RUNNER_TASK_MODULES"] = ",".join(
            m for m in (env.get("TASK_RUNNER_TASK_MODULES", ""), SIM_TASK_MODULE) if m
        )
        env.pop("AWS_ENDPOINT_URL", None)
        env.update(self.env_overrides)
        return Settings.from_env(env)

    def _clients_for(self, settings: Settings) -> SimAwsClients:
        return SimAwsClients(settings, self)

    def raw_client(self, service: str) -> Any:
        if service == "stepfunctions":
            return StepFunctionsClient(self.sfn)
        if service == "lambda":
            return LambdaClient(self.lambdas, self.topology)
        if service == "sqs":
            return self.sqs
        if service == "dynamodbstreams":
            return self.streams
        if service == "scheduler":
            return self.eventbridge
        return self.raw.get(service)

    def _on_failure_for(self, queue: MappingQueue) -> Any:
        """What the mapping does with a batch it gave up on: its OnFailure destination
        (an SQS queue) is sent the batch's metadata, as Lambda sends it."""
        logical = queue.mapping.on_failure_logical_id
        if not logical or logical not in self.physical:
            return None
        url = self.physical[logical]
        function = queue.function

        def send(records: list[dict[str, Any]], condition: str, tries: int) -> None:
            message = failure_message(
                function_arn=function.arn,
                stream_arn=self.stream_arn,
                shard_id=self.streams.shard_id(),
                records=records,
                condition=condition,
                retries=tries,
                now=self.clock.t,
            )
            self.sqs.send_message(QueueUrl=url, MessageBody=json.dumps(message))

        return send

    # --- hooks for the fault client ------------------------------------------------------

    def refuse_if_killed(self) -> None:
        fiber = self.scheduler.current()
        if fiber is not None and fiber.pending is not None:
            raise type(fiber.pending)(*fiber.pending.args)

    def actor(self) -> str:
        invocation = self.lambdas.current()
        if invocation is not None:
            return invocation.id
        return self.sfn_actor or "harness"

    def fault_for(self, site: str, task: str, *, process: bool = True) -> FaultKind | None:
        """The fault this call meets, if any. `process`: the caller is a process that can
        crash or hang (a Lambda, the CLI); a call Step Functions itself makes cannot, so
        there a crash or a hang is the error or the lost reply it would look like."""
        budget = self.budget
        if site.startswith("ASL:"):
            budget = self._asl_budget(site)
        kind = self.faults.decide(site, task, self.clock.t, budget)
        if kind is None:
            return None
        invocation = self.lambdas.current()
        if not process:
            kind = {
                FaultKind.CRASH_BEFORE: FaultKind.TRANSIENT,
                FaultKind.TIMEOUT: FaultKind.TRANSIENT,
                FaultKind.CRASH_AFTER: FaultKind.LOST_REPLY,
            }.get(kind, kind)
        firing = Firing(site, kind, task, self.clock.t, self.actor())
        self.faults.firings.append(firing)
        if invocation is not None:
            invocation.faults.append(firing)
        return kind

    def _asl_budget(self, site: str) -> int:
        """Enough failures in a row to exhaust the state's matching retrier."""
        _, state_name, operation = site.split(":", 2)
        for machine in self.sfn.machines.values():
            if state_name in machine.definition["States"]:
                state = machine.state(state_name)
                error = (
                    "Lambda.TooManyRequestsException"
                    if operation == "Invoke"
                    else ("DynamoDB.ProvisionedThroughputExceededException")
                )
                found = asl.retrier_for(state, error)
                return 1 + (asl.max_attempts(found[1]) if found else 0)
        return 1

    def crash(self, why: str) -> None:
        self.scheduler.kill_current(SimCrash, why)

    def timeout(self, why: str) -> None:
        self.scheduler.hang_current()

    def snapshot(self, task: str) -> dict[str, Any] | None:
        """The item as DynamoDB holds it now (read from moto's backend: no request)."""
        if task == "*":
            return None
        from moto.dynamodb.models.dynamo_type import DynamoType

        item = self._moto_table().get_item(DynamoType({"S": task}))
        if item is None:
            return None
        values = deserialize_image(item.to_json()["Attributes"])
        if is_reference(values.get("data")):
            values["data"] = self._payload(values["data"])
        return values

    def _payload(self, ref: dict[str, Any]) -> Any:
        """An offloaded input as the harness reads it (moto's S3, unfaulted; staged inputs
        too), so the checks see its nonce."""
        inner = ref[REFERENCE_KEY]
        found = self._payloads.get(inner["sha256"])
        if found is None:
            s3 = self.raw.get("s3")
            for key in (inner["key"], staged_key(ref)):
                try:
                    body = s3.get_object(Bucket=inner["bucket"], Key=key)["Body"].read()
                except s3.exceptions.NoSuchKey:
                    continue
                found = self._payloads[inner["sha256"]] = json.loads(body)
                break
        return found if found is not None else ref

    def task_of_key(self, key: str) -> str | None:
        """The task whose payload prefix an S3 key is under (tasks/ or staging/)."""
        digest = key.split("/")[1] if key.count("/") >= 2 else ""
        for task_id, item in self.items.items():
            created = (item or {}).get("created_at")
            if digest and task_prefix(task_id, created).split("/")[1] == digest:
                return task_id
        return None

    def task_of_schedule(self, name: str) -> str | None:
        """The task a one-time schedule's name is made from (runner.delays.schedule_name)."""
        from runner.delays import schedule_name

        return next((t for t in self.items if schedule_name(t) == name), None)

    def log_write(
        self, site: str, task: str, old: dict[str, Any] | None, new: dict[str, Any] | None
    ) -> None:
        if task == "*" or old == new:
            return
        self.ledger.write(self.clock.t, task, site, self.actor(), old, new)
        self.items[task] = new
        self.pump()  # its stream record carries the time it was written

    # --- hooks for the task fixtures (sim_tasks.Ledger) ------------------------------------

    def _env_name(self) -> str:
        fiber = self.scheduler.current()
        return str(fiber.env) if fiber is not None else "?"

    def started(self, ctx: TaskContext, nonce: str) -> None:
        self.ledger.event(self.clock.t, "start", ctx.task_id, nonce, ctx.attempt, self._env_name())

    def effect(self, ctx: TaskContext, nonce: str, label: str) -> None:
        self.refuse_if_killed()
        self.ledger.event(
            self.clock.t, "effect", ctx.task_id, nonce, ctx.attempt, self._env_name(), label
        )

    def ended(self, ctx: TaskContext, nonce: str, outcome: str) -> None:
        self.ledger.event(
            self.clock.t, "end", ctx.task_id, nonce, ctx.attempt, self._env_name(), outcome
        )

    def sleep(self, seconds: float) -> None:
        self.scheduler.sleep(seconds)

    # --- the stream ----------------------------------------------------------------------

    def pump(self) -> None:
        """New stream records, stamped with the virtual time, offered to every mapping."""
        if len(self.ledger.writes) == self._pumped:
            return  # every change of an item is in the write log: nothing new
        self._pumped = len(self.ledger.writes)
        for raw in self._new_stream_records():
            record = lambda_record(raw, stream_arn=self.stream_arn, region=REGION)
            record["dynamodb"]["ApproximateCreationDateTime"] = int(self.clock.t)
            self.stream_times[str(record["dynamodb"]["SequenceNumber"])] = self.clock.t
            key = record["dynamodb"].get("Keys", {}).get("id", {}).get("S")
            if record.get("eventName") == "REMOVE" and key in self.ttl_deleted:
                # What DynamoDB's TTL deletions carry (DynamoDB Developer Guide).
                record["userIdentity"] = {
                    "type": "Service",
                    "principalId": "dynamodb.amazonaws.com",
                }
            for queue in self.queues:
                queue.offer(record)

    def _new_stream_records(self) -> list[dict[str, Any]]:
        """The shard's records not read yet, as GetRecords gives them (read from moto's
        backend, whose serializer would cost about 1.5 ms a record)."""
        shard = self._moto_table().stream_shard
        records = [copy.deepcopy(r.to_json()) for r in shard.items[self._stream_read :]]
        self._stream_read = len(shard.items)
        return records

    def _moto_table(self) -> Any:
        from moto.dynamodb.models import dynamodb_backends

        return dynamodb_backends[ACCOUNT][REGION].get_table(self.table)

    # --- state ---------------------------------------------------------------------------

    def log_outside_write(
        self,
        task: str,
        site: str,
        actor: str,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
    ) -> None:
        """A write made outside the runner (a producer's own put, TTL's delete)."""
        self.ledger.write(self.clock.t, task, site, actor, old, new)
        self.items[task] = new
        self.pump()

    def item(self, task_id: str) -> dict[str, Any] | None:
        return self.items.get(task_id)

    def close(self) -> None:
        self.scheduler.shutdown(list(self.lambdas.all_envs()))
        self.lambdas.close()
        sim_tasks.unbind(self)
        self.raw.dynamodb.delete_table(TableName=self.table)

    def settings(self) -> Mapping[str, Any]:
        return {"seed": self.seed, "table": self.table}
