"""EventBridge Scheduler, run locally: moto stores schedules but never fires them.

`LocalScheduler` creates the template's schedule groups and schedules in moto's
Scheduler (moto's CloudFormation skips `AWS::Scheduler::*`), and the recurring
schedules of the stack's extra task modules (the demo's) from the same
`runner.recurring.schedule_resources` that `sls package` uses. Then a thread fires every
ENABLED schedule moto holds, those created at run time (delayed tasks' one-time
schedules) included, at its time (`runner.cron`: `at()`, `rate()`, six-field `cron()`
in the schedule's time zone, daylight saving included), within about 0.1 s:

- the target's `Input`, with the context attributes (`<aws.scheduler.scheduled-time>`,
  `-schedule-arn>`, `-execution-id>`, `-attempt-number>`) replaced, is sent to an SQS
  queue target, or is the event of a Lambda function target;
- a one-time schedule with `ActionAfterCompletion` DELETE is deleted once it fired;
- a rate schedule fires first at its start (StartDate, else its creation), as AWS's
  does; a cron one from its creation on.

AWS fires within the minute a time falls in (60 s precision), at least once; this fires
on the second, once, neither of which the runner relies on (a one-time schedule fires 5
minutes early and the rest goes to SQS; a recurring fire delivered twice creates one
task: tests/e2e/test_timers.py delivers one twice).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from runner.cron import Expression, ExpressionError, parse
from runner.delays import queue_arn
from runner.local.lambdas import Invoker

log = logging.getLogger(__name__)

_GROUP_TYPE = "AWS::Scheduler::ScheduleGroup"
_SCHEDULE_TYPE = "AWS::Scheduler::Schedule"
REFRESH_SECONDS = 0.5
# An at() this far in the past when it was created still fires (AWS's precision).
AT_SLACK = timedelta(seconds=60)


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass
class _State:
    group: str
    name: str
    arn: str
    modified: Any
    expression: Expression
    timezone: str
    start: datetime
    target: dict[str, Any]
    delete_after: bool
    next_due: datetime | None


class LocalScheduler:
    """Fires the schedules moto's Scheduler holds."""

    def __init__(
        self,
        scheduler: Any,
        sqs: Any,
        *,
        region: str,
        functions: Mapping[str, Invoker] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.scheduler = scheduler
        self.sqs = sqs
        self.region = region
        self.functions = dict(functions or {})  # function ARN → invoker
        self.clock = clock
        self.fired: list[tuple[str, str]] = []  # (schedule name, scheduled time)
        self._states: dict[tuple[str, str], _State] = {}
        self._queue_urls: dict[str, str] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="scheduler-target")
        self._thread: threading.Thread | None = None

    # --- creating the template's schedules ---------------------------------------------

    def create_from_template(
        self, template: dict[str, Any], resolve: Callable[[Any], str]
    ) -> list[str]:
        """Create the template's schedule groups and schedules; returns the schedules."""
        resources = template.get("Resources", {})
        for resource in resources.values():
            if resource.get("Type") == _GROUP_TYPE:
                name = resource["Properties"]["Name"]
                groups = self.scheduler.list_schedule_groups()["ScheduleGroups"]
                if name not in {g["Name"] for g in groups}:
                    self.scheduler.create_schedule_group(Name=name)
        created = []
        for logical_id, resource in sorted(resources.items()):
            if resource.get("Type") != _SCHEDULE_TYPE:
                continue
            props = resource["Properties"]
            target = {key: resolve(value) for key, value in props["Target"].items()}
            request = {
                "Name": props.get("Name", logical_id),
                "GroupName": resolve(props.get("GroupName", "default")),
                "ScheduleExpression": props["ScheduleExpression"],
                "ScheduleExpressionTimezone": props.get("ScheduleExpressionTimezone", "UTC"),
                "FlexibleTimeWindow": props["FlexibleTimeWindow"],
                "State": props.get("State", "ENABLED"),
                "Target": target,
            }
            if "Description" in props:
                request["Description"] = props["Description"]
            self.scheduler.create_schedule(**request)
            created.append(str(request["Name"]))
        self._wake.set()
        return created

    # --- firing ------------------------------------------------------------------------

    def start(self) -> None:
        self._refresh()
        self._thread = threading.Thread(target=self._run, name="local-scheduler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run(self) -> None:
        next_refresh = self.clock()
        while not self._stop.is_set():
            now = self.clock()
            try:
                if now >= next_refresh:
                    self._refresh()
                    next_refresh = now + timedelta(seconds=REFRESH_SECONDS)
                self._fire_due(now)
            except Exception:
                log.exception("local scheduler tick failed")
            with self._lock:
                dues = [s.next_due for s in self._states.values() if s.next_due is not None]
            wake = min([*dues, next_refresh])
            self._wake.wait(max(0.005, (wake - self.clock()).total_seconds()))
            self._wake.clear()

    def _refresh(self) -> None:
        """Read every schedule moto holds; (re)compute those new or changed."""
        seen: set[tuple[str, str]] = set()
        token: str | None = None
        while True:
            page = self.scheduler.list_schedules(**({"NextToken": token} if token else {}))
            for summary in page.get("Schedules", []):
                key = (summary["GroupName"], summary["Name"])
                seen.add(key)
                known = self._states.get(key)
                if known is not None and known.modified == summary.get("LastModificationDate"):
                    continue
                state = self._read(summary["GroupName"], summary["Name"], changed=known is not None)
                with self._lock:
                    if state is None:
                        self._states.pop(key, None)
                    else:
                        self._states[key] = state
            token = page.get("NextToken")
            if not token:
                break
        with self._lock:
            for key in set(self._states) - seen:
                del self._states[key]

    def _read(self, group: str, name: str, *, changed: bool = False) -> _State | None:
        try:
            found = self.scheduler.get_schedule(GroupName=group, Name=name)
        except Exception:
            return None  # deleted meanwhile
        if found.get("State", "ENABLED") != "ENABLED":
            return None
        try:
            expression = parse(found["ScheduleExpression"])
        except ExpressionError:
            log.warning("schedule %s/%s: expression not understood", group, name)
            return None
        created = _moment(found.get("CreationDate")) or self.clock()
        start = _moment(found.get("StartDate")) or created
        timezone = found.get("ScheduleExpressionTimezone") or "UTC"
        after = start - timedelta(microseconds=1)
        if expression.kind == "at":
            after = created - AT_SLACK
        elif expression.kind == "cron":
            after = start
        if changed:  # an update: from now on, never again for times gone by
            after = max(after, self.clock())
        return _State(
            group=group,
            name=name,
            arn=found["Arn"],
            modified=found.get("LastModificationDate"),
            expression=expression,
            timezone=timezone,
            start=start,
            target=dict(found["Target"]),
            delete_after=found.get("ActionAfterCompletion") == "DELETE",
            next_due=expression.next_after(after, timezone=timezone, start=start),
        )

    def _fire_due(self, now: datetime) -> None:
        with self._lock:
            due = [s for s in self._states.values() if s.next_due and s.next_due <= now]
        for state in due:
            assert state.next_due is not None
            scheduled = state.next_due
            self._deliver(state, scheduled)
            self.fired.append((state.name, _stamp(scheduled)))
            if state.expression.recurring:
                state.next_due = state.expression.next_after(
                    scheduled, timezone=state.timezone, start=state.start
                )
                continue
            state.next_due = None
            if state.delete_after:
                try:
                    self.scheduler.delete_schedule(GroupName=state.group, Name=state.name)
                except Exception:
                    log.warning("could not delete fired schedule %s", state.name)

    def _deliver(self, state: _State, scheduled: datetime) -> None:
        target = state.target
        text = str(target.get("Input", ""))
        for key, value in {
            "scheduled-time": _stamp(scheduled),
            "schedule-arn": state.arn,
            "execution-id": uuid.uuid4().hex[:16],
            "attempt-number": "1",
        }.items():
            text = text.replace(f"<aws.scheduler.{key}>", value)
        arn = str(target["Arn"])
        if arn.startswith("arn:aws:sqs:"):
            self.sqs.send_message(QueueUrl=self._queue_url(arn), MessageBody=text)
        elif arn in self.functions:
            event = json.loads(text) if text else {}
            self._pool.submit(self.functions[arn], event)
        else:
            log.warning("schedule %s: target %s is not run locally", state.name, arn)

    def _queue_url(self, arn: str) -> str:
        if arn not in self._queue_urls:
            name = arn.rsplit(":", 1)[1]
            self._queue_urls[arn] = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
        return self._queue_urls[arn]

    def next_fire_times(self) -> dict[str, str | None]:
        with self._lock:
            return {
                s.name: _stamp(s.next_due) if s.next_due else None for s in self._states.values()
            }


def _moment(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return None


def _stamp(moment: datetime) -> str:
    """Scheduler's scheduled-time format: `2022-03-22T18:59:43Z`."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def template_resolver(
    template: dict[str, Any], physical: Mapping[str, str], region: str, account: str
) -> Callable[[Any], str]:
    """Resolves the `Ref`s and `GetAtt ... Arn`s a schedule's properties use."""
    resources = template.get("Resources", {})

    def resolve(node: Any) -> str:
        if isinstance(node, str):
            return node
        if "Ref" in node:
            target = resources.get(node["Ref"], {})
            if target.get("Type") == _GROUP_TYPE:
                return str(target["Properties"]["Name"])
            return physical[node["Ref"]]
        logical, attribute = node["Fn::GetAtt"]
        kind = resources.get(logical, {}).get("Type")
        if attribute == "Arn" and kind == "AWS::SQS::Queue":
            return queue_arn(physical[logical], region)
        if attribute == "Arn" and kind == "AWS::IAM::Role":
            return f"arn:aws:iam::{account}:role/{physical[logical]}"
        if attribute == "Arn" and kind == "AWS::Lambda::Function":
            return f"arn:aws:lambda:{region}:{account}:function:{physical[logical]}"
        raise ValueError(f"cannot resolve {node!r} locally")

    return resolve
