"""The local stack's timers: the template's SQS event source mappings (`queue_poller`)
and EventBridge Scheduler (`scheduler_service`), which moto stores but never runs."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import boto3

from runner.local.lambdas import LambdaInvoker
from runner.local.queue_poller import QueuePoller, queue_mappings
from runner.local.scheduler_service import LocalScheduler, template_resolver

log = logging.getLogger(__name__)


@dataclass
class LocalTimers:
    scheduler: LocalScheduler
    pollers: list[QueuePoller] = field(default_factory=list)

    def stop(self) -> None:
        self.scheduler.stop()
        for poller in self.pollers:
            poller.stop()


def extra_schedule_resources(template: dict[str, Any], task_modules: str) -> dict[str, Any]:
    """The recurring schedules of the stack's extra task modules (the demo's) that the
    template lacks, as `sls package` would have made them had they been deployed."""
    from runner.recurring import schedule_resources
    from tasks import build_registry

    modules = tuple(m.strip() for m in task_modules.split(",") if m.strip())
    wanted = schedule_resources(build_registry(modules))
    names = {
        r["Properties"].get("Name")
        for r in template.get("Resources", {}).values()
        if r.get("Type") == "AWS::Scheduler::Schedule"
    }
    return {k: v for k, v in wanted.items() if v["Properties"]["Name"] not in names}


def start_timers(
    *,
    session: boto3.Session,
    endpoint: str,
    region: str,
    account: str,
    template: dict[str, Any],
    resources: dict[str, str],
    functions: dict[str, Any],  # logical id → FunctionInfo
    task_modules: str,
) -> LocalTimers:
    sqs = session.client("sqs", endpoint_url=endpoint, region_name=region)
    scheduler_client = session.client("scheduler", endpoint_url=endpoint, region_name=region)
    invokers = {
        info.arn: LambdaInvoker(
            info.name, endpoint_url=endpoint, region=region, timeout_seconds=info.timeout
        )
        for info in functions.values()
    }
    scheduler = LocalScheduler(scheduler_client, sqs, region=region, functions=invokers)
    resolve = template_resolver(template, resources, region, account)
    scheduler.create_from_template(template, resolve)
    extra = extra_schedule_resources(template, task_modules)
    if extra:
        scheduler.create_from_template({"Resources": extra}, resolve)
    timers = LocalTimers(scheduler)
    for mapping in queue_mappings(template):
        function = functions[mapping.function_logical_id]
        url = resources[mapping.queue_logical_id]
        arn = resolve({"Fn::GetAtt": [mapping.queue_logical_id, "Arn"]})
        poller = QueuePoller(
            mapping,
            invokers[function.arn],
            sqs=sqs,
            queue_url=url,
            queue_arn=arn,
            region=region,
        )
        poller.start()
        timers.pollers.append(poller)
    scheduler.start()
    return timers
