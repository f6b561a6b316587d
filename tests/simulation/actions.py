"""What can happen to a simulated deployment, one step at a time: producers insert tasks,
mappings deliver stream batches, the schedule runs the sweeper, executions take a step,
an operator redrives or cancels a task, time passes, TTL deletes finished tasks. The state
machine's rules call these; `quiesce` runs them on its own once the faults stop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from runner.client import TaskRunnerClient
from runner.delays import OVERDUE_GRACE_SECONDS, parse_time
from runner.items import serialize
from runner.recurring import fired_task_id
from tests.simulation import timers
from tests.simulation.lambdas import Invocation
from tests.simulation.schedules import Schedules
from tests.simulation.world import CLI, PRODUCER, TaskInfo, World

# Task types of tests.simulation.sim_tasks and the inputs a seed picks from.
VARIANTS: dict[str, list[dict[str, Any]]] = {
    "SIM_SYNC": [{}],
    "SIM_ASYNC": [{"seconds": 1}, {"seconds": 20}],
    "SIM_SLOW": [{"seconds": 10}, {"seconds": 45}, {"seconds": 150}, {"seconds": 700}],
    "SIM_SLOW_ASYNC": [{"seconds": 10}, {"seconds": 45}, {"seconds": 150}],
    "SIM_LONG": [{"seconds": 200}, {"seconds": 400}],
    "SIM_FLAKY": [{"fail_times": 1}, {"fail_times": 2}, {"fail_times": 6}],
    "SIM_LOCAL_RETRY": [
        {"seconds": 50, "fail_times": 2},
        {"seconds": 50, "fail_times": 9},
        {"seconds": 70},  # past its 60 s timeout: the timed-out try is retried in-process
    ],
    "SIM_PERMANENT": [{}],
    # Near DynamoDB's 400 KB: the failure (error + attempt record) may not fit.
    "SIM_LARGE": [
        {"blob": 300_000, "outcome": "fail", "fail_times": 1},
        {"blob": 407_500, "outcome": "fail", "fail_times": 1},
        {"blob": 409_000},
        {"blob": 150_000, "result_bytes": 255_000},
    ],
    "SIM_ODD_RESULT": [{"outcome": "nan"}, {"outcome": "huge"}],
    # Durable steps (issue 14): s2 fails once, none fails, s2 fails once and the steps'
    # results are offloaded to the payload bucket.
    "SIM_STEPS": [{"fail_times": 1}, {}, {"fail_times": 1, "result_bytes": 20_000}],
}
TYPES = tuple(VARIANTS)
SHAPES = ("client", "client", "raw", "malformed")
# How far `advance` moves the clock.
STEPS = {"tick": 1.0, "short": 30.0, "minute": 61.0, "hour": 3601.0}
# Give up waiting for the system to settle after this long without faults.
QUIET_HORIZON = 2 * 24 * 3600.0
# Before that, faults still armed may strike for this long.
FAULT_PHASE = 2 * 3600.0


def _data(task_type: str, variant: int, nonce: str) -> dict[str, Any]:
    options = VARIANTS[task_type]
    data = dict(options[variant % len(options)])
    if "blob" in data:
        data["blob"] = "b" * int(data["blob"])
    return {**data, "nonce": nonce}


def run_at_seconds(item: dict[str, Any]) -> float:
    """A SCHEDULED item's `run_at` on the clock (0 without one)."""
    run_at = item.get("run_at")
    return parse_time(str(run_at)).timestamp() if run_at else 0.0


def is_final(item: dict[str, Any] | None) -> bool:
    """DONE; CANCELLED; FAILED permanently; FAILED with retries exhausted."""
    if not item:
        return False
    if item.get("status") in ("DONE", "CANCELLED"):
        return True
    if item.get("status") != "FAILED":
        return False
    return bool(item.get("retries_exhausted")) or item.get("retryable") is not True


# --- producers -------------------------------------------------------------------------


def create_task(
    world: World,
    task_type: str,
    variant: int,
    shape: str,
    task_id: str | None = None,
    *,
    delay: float | None = None,
    slow: float = 0.0,
) -> TaskInfo | None:
    """A producer's create (`delay`: a delayed task, through the client). `slow`: its
    insert is made that many seconds late, and the rule returns while it waits (the
    delayed task's timer, set before the insert, may come first)."""
    task_id = task_id or f"t{len(world.tasks) + 1}"
    nonce = f"n{world.ledger.next_seq()}"
    data = _data(task_type, variant, nonce)
    if shape == "client":

        def call(app: Any) -> Any:
            return TaskRunnerClient(app).create_task(task_type, data, task_id=task_id, delay=delay)

        if slow > 0:
            return _create_slowly(world, task_id, nonce, task_type, call, slow)
        world.lambdas.invoke(PRODUCER, None, choice=0, call=call)
    else:
        item: dict[str, Any] = {"id": task_id, "type": task_type, "status": "PENDING", "data": data}
        if shape == "malformed":
            item["data"] = "not a map"
        try:
            world.raw.dynamodb.put_item(
                TableName=world.table,
                Item=serialize(item),
                ConditionExpression="attribute_not_exists(id)",
            )
        except Exception:
            return None
        world.log_outside_write(task_id, "producer:PutItem", "producer", None, item)
    stored = world.snapshot(task_id)
    world.items[task_id] = stored
    if stored is None:
        return None
    # (world.snapshot loads an offloaded input: the nonce is in it.)
    stored_nonce = (
        stored.get("data", {}).get("nonce") if isinstance(stored.get("data"), dict) else None
    )
    if shape != "malformed" and stored_nonce != nonce:
        return None
    info = TaskInfo(task_id, nonce, task_type, shape, world.clock.t)
    world.tasks[task_id] = info
    world.ttl_deleted.discard(task_id)
    return info


def _create_slowly(
    world: World, task_id: str, nonce: str, task_type: str, call: Any, slow: float
) -> TaskInfo:
    """The create runs on while the rules go on; a create that wrote nothing (or another
    incarnation's item) is no task to check."""
    info = TaskInfo(task_id, nonce, task_type, "client", world.clock.t)
    world.tasks[task_id] = info
    world.ttl_deleted.discard(task_id)
    world.faults.delay(task_id, "PutItem", slow)

    def done(_: Invocation) -> None:
        stored = world.snapshot(task_id)
        data = (stored or {}).get("data")
        if not isinstance(data, dict) or data.get("nonce") != nonce:
            info.deleted, info.final_when_deleted = True, True

    world.lambdas.start(PRODUCER, None, choice=0, call=call, on_done=done)
    return info


def fire_recurring(world: World, slot: int) -> str | None:
    """A recurring schedule fires (or fires again) for one of its last few scheduled
    times: its target sends the fire to the timer queue."""
    if not world.timers:
        return None
    period = timers.RECURRING_PERIOD
    scheduled = (world.clock.t // period - slot % 4) * period
    task_id = fired_task_id(timers.RECURRING_SCHEDULE, timers.iso_seconds(scheduled))
    body = world.fires.get(task_id)
    if body is None:
        nonce = f"n{world.ledger.next_seq()}"
        body = world.fires[task_id] = timers.recurring_body("SIM_SYNC", scheduled, nonce)
        world.tasks.setdefault(
            task_id, TaskInfo(task_id, nonce, "SIM_SYNC", "client", world.clock.t)
        )
    world.sqs.send_message(QueueUrl=world.timers[0].url, MessageBody=body)
    return task_id


def fire_schedule(world: World, index: int, how: str) -> bool:
    """EventBridge Scheduler fires a one-time schedule that is due (`early`: within the
    minute before its time), twice, or loses it."""
    due = world.eventbridge.due(early=how == "early")
    if not due:
        return False
    world.eventbridge.fire(due[index % len(due)], how)
    return True


def deliver_timers(world: World, take: int, choice: int | None) -> Invocation | None:
    ready = [m for m in world.timers if m.deliverable()]
    return ready[0].deliver(take, choice) if ready else None


# --- Lambda: stream batches, the schedule, executions ---------------------------------------


def deliver(
    world: World, index: int, skip: int, take: int, choice: int | None
) -> Invocation | None:
    """The next batch of a mapping with a lane free (ParallelizationFactor), to its
    function."""
    ready = [q for q in world.queues if q.deliverable()]
    if not ready:
        return None
    queue = ready[index % len(ready)]
    batch = queue.next_batch(world.clock.t, skip=skip, take=take)
    if batch is None:
        return None

    def settle(invocation: Invocation) -> None:
        queue.settle(
            batch,
            world.clock.t,
            function_error=invocation.outcome != "ok",
            response=invocation.result,
        )

    return world.lambdas.start(
        queue.function, {"Records": batch.records}, choice=choice, on_done=settle
    )


def step_execution(world: World, index: int, choice: int | None) -> bool:
    due = world.sfn.due()
    if not due:
        return False
    world.sfn_choice = choice
    world.sfn.step(due[index % len(due)])
    return True


# --- people and time ---------------------------------------------------------------------


def retry_task(world: World, task_id: str, choice: int) -> Invocation:
    return world.lambdas.invoke(
        CLI, None, choice=choice, call=lambda app: TaskRunnerClient(app).retry_task(task_id)
    )


def cancel_task(world: World, task_id: str, choice: int) -> Invocation:
    """An operator's `cancel-task`: refused (one line) for a task that has finished."""
    return world.lambdas.invoke(
        CLI, None, choice=choice, call=lambda app: TaskRunnerClient(app).cancel_task(task_id)
    )


def next_event_time(world: World, schedules: Schedules) -> float | None:
    candidates = [
        world.sfn.next_time(),
        schedules.next_time(),
        world.eventbridge.next_time(),
        *(m.next_time() for m in world.timers),
    ]
    times = [t for t in candidates if t is not None]
    return min(times) if times else None


def advance(world: World, schedules: Schedules, how: str) -> None:
    """Let time pass: up to a target, the next scheduled thing, or an invocation's end."""
    now = world.clock.t
    if how in STEPS:
        target = now + STEPS[how]
    else:  # "next": the next execution step or scheduled run
        found = next_event_time(world, schedules)
        target = found if found is not None else now + 1
    run_until(world, schedules, max(target, now))


def stall(world: World, schedules: Schedules, how: str) -> None:
    """Only running invocations move while the clock passes the next lease (or an hour)."""
    now = world.clock.t
    if how == "lease":
        leases = [
            float(item["lease_expires_at"])
            for item in world.items.values()
            if item and item.get("status") == "PROCESSING" and "lease_expires_at" in item
        ]
        target = min(leases) + 1 if leases else now + STEPS["short"]
    else:
        target = now + STEPS[how]
    world.stalls.append((now, max(target, now)))
    world.scheduler.run_until(max(target, now))
    schedules.catch_up()


def run_until(world: World, schedules: Schedules, target: float) -> None:
    """Move the clock to `target`, stopping early at the next scheduled thing, when an
    invocation finishes or when the table changes (its stream has news for the
    mappings): the caller decides what happens then."""
    upcoming = next_event_time(world, schedules)
    if upcoming is not None:
        target = min(target, max(upcoming, world.clock.t))
    finished, writes = len(world.lambdas.finished), len(world.ledger.writes)

    def news() -> bool:
        return len(world.lambdas.finished) > finished or len(world.ledger.writes) > writes

    world.scheduler.run_until(target, stop=news)
    schedules.catch_up()


def settled(world: World) -> bool:
    if any(q.busy() for q in world.queues) or world.sfn.running() or world.lambdas.running():
        return False
    if any(m.busy() for m in world.timers) or world.eventbridge.schedules:
        return False
    return all(
        is_final(world.items.get(info.id)) for info in world.tasks.values() if not info.deleted
    )


def quiet(world: World) -> bool:
    """Nothing in flight: no stream record to deliver, no on-failure message to replay,
    no execution, no invocation. (TTL's month-long jump needs this: in AWS a month holds
    thousands of sweeps, and a message left waiting through it would outlive the
    queue's retention, which the jump's dozen collapsed sweeps come too late for.)"""
    return not (
        any(q.busy() for q in world.queues)
        or world.sqs.waiting()
        or world.sfn.running()
        or world.lambdas.running()
        or world.eventbridge.schedules
        or any(item and item.get("status") == "SCHEDULED" for item in world.items.values())
    )


def expire_by_ttl(world: World, schedules: Schedules) -> list[str]:
    """Jump past the latest expiry and delete what TTL deletes (only with nothing in
    flight, so a month passing does not also starve work in flight)."""
    attribute = world.topology.table.ttl_attribute
    if not attribute or not quiet(world):
        return []
    expiries = [
        float(item[attribute]) for item in world.items.values() if item and attribute in item
    ]
    if not expiries:
        return []
    world.clock.advance_to(max(expiries) + 3600)
    schedules.catch_up()
    deleted = []
    for task_id, item in list(world.items.items()):
        if item and attribute in item and float(item[attribute]) <= world.clock.t:
            world.raw.dynamodb.delete_item(TableName=world.table, Key=serialize({"id": task_id}))
            world.ttl_deleted.add(task_id)
            world.log_outside_write(task_id, "TTL:DeleteItem", "dynamodb", item, None)
            info = world.tasks.get(task_id)
            if info is not None:
                info.deleted, info.final_when_deleted = True, is_final(item)
            deleted.append(task_id)
    return deleted


# --- the quiet period ----------------------------------------------------------------------


def recovery_bound(world: World, schedules: Schedules) -> float:
    """The README's bound for I3: one lease + one sweep period + one orphan-scan rotation."""
    from runner import executor

    grace = float(getattr(executor, "LEASE_GRACE_SECONDS", 30.0))
    apps = [e.app for e in world.lambdas.all_envs()]
    registry = apps[0].registry if apps else None
    longest = max((d.timeout_seconds for d in registry), default=300.0) if registry else 900.0
    period = max(schedules.periods.values(), default=300.0)
    segments = max((a.settings.orphan_scan_segments for a in apps), default=13)
    return longest + grace + period + segments * period


def quiesce(world: World, schedules: Schedules, *, max_steps: int = 4000) -> None:
    """Run everything as AWS would: first with the faults still armed (for at most
    FAULT_PHASE of virtual time, so that faults armed on tasks the steps left waiting
    still strike), then with no fault at all until all is settled or stuck for good."""
    phase_end = world.clock.t + FAULT_PHASE

    def spent() -> bool:  # no armed fault can strike any more, and no storm is raging
        if world.faults.storms:
            return False
        live = {t.id for t in world.tasks.values() if not is_final(world.items.get(t.id))}
        return settled(world) or not any(a.task in live for a in world.faults.armed)

    _drive(world, schedules, until=spent, horizon=phase_end, max_steps=max_steps)
    world.faults.stop()
    world.fault_stop_at = world.clock.t
    bound = recovery_bound(world, schedules)

    period = max(schedules.periods.values(), default=300.0)

    def stuck() -> bool:
        if settled(world):
            return True
        if world.sfn.running() or world.lambdas.running():
            return False
        stopped = world.fault_stop_at or world.clock.t
        last_write = world.ledger.writes[-1].at if world.ledger.writes else stopped
        quiet_for = world.clock.t - max(last_write, stopped)
        # Nothing moves and nothing will: what is left is stranded. That is certain once
        # the README's bound has passed quietly; sooner when no lease is still to expire
        # and no PENDING task waits for the orphan scan's rotation.
        # A SCHEDULED task waits on purpose until its run_at, and for the sweeper's
        # grace and period past it (its timer lost).
        due = [
            run_at_seconds(item) + OVERDUE_GRACE_SECONDS + 2 * period
            for item in world.items.values()
            if item and item.get("status") == "SCHEDULED"
        ]
        if any(at > world.clock.t for at in due):
            return False
        waiting = [
            item
            for item in world.items.values()
            if item
            and (
                item.get("status") in ("PENDING", "SCHEDULED")
                or (
                    item.get("status") == "PROCESSING"
                    and float(item.get("lease_expires_at", 0)) >= world.clock.t - period
                )
            )
        ]
        return quiet_for > bound or (not waiting and quiet_for > 2 * period)

    _drive(
        world, schedules, until=stuck, horizon=world.clock.t + QUIET_HORIZON, max_steps=max_steps
    )


def _drive(
    world: World,
    schedules: Schedules,
    *,
    until: Callable[[], bool],
    horizon: float,
    max_steps: int,
) -> None:
    for _ in range(max_steps):
        world.pump()
        if any(q.deliverable() for q in world.queues):
            deliver(world, 0, 0, 10_000, None)
            continue
        if fire_schedule(world, 0, "on-time"):
            continue
        if deliver_timers(world, 10, None) is not None:
            continue
        if step_execution(world, 0, None):
            continue
        schedules.catch_up()
        if schedules.due:
            schedules.run_next(None)
            continue
        if until() or world.clock.t > horizon:
            return
        run_until(world, schedules, horizon)
