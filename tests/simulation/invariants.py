"""Issue 11's invariants, checked on the ledger (handler runs, effects, writes) and on the
invocations, as the simulation goes (I1, I2, I4, I6, T) and after it settles (I3, I5).

- I1  No two runs of one task overlap: no effect from an attempt after a later attempt
      of the same task started.
- I2  One claim runs the handler at most once (in-process retries of a failed try are
      the same run; a second start while a run is going, or after it succeeded, is not).
- I3  Every task reaches a final status (DONE; CANCELLED; FAILED permanently; FAILED
      with retries exhausted) once the faults stop and time runs on.
- I4  A dead or superseded claim never overwrites a newer state: no write changes a
      PROCESSING item under a live lease unless its claimer makes it; DONE never changes;
      no status moves the model forbids; a write that moves an item out of PROCESSING
      sets no lease on it, but the lease of an attempt whose handler still runs
      (abandoned past its timeout: it holds the retry off); exhausted retries (the
      Catch path) leave neither claim token nor lease.
- I5  Every final task carries its TTL attribute.
- I6  One bad task never stops a batch, a routing batch or a sweep: the functions fed by
      a mapping or a schedule raise only for a table-wide fault, and report a record as
      failed only when that record's task met an infrastructure fault.
- T   (budget) No invocation runs past its function's timeout unless a fault made it hang.
- C1  CANCELLED is final: no handler run of that task (the same incarnation) starts after
      the write that cancelled it.
- S1  (issue 14) A durable step is recorded only by the claim that holds the task, once:
      no step record is written by another actor than the live claim's, none replaced.
- S2  (issue 14) A recorded step is not run again: no step effect (`step:<name>`) of the
      same task incarnation by another attempt after that step's record was written.
- D1, D2, R1 (issue 13: no run before `run_at`; a promotion in time, a lost timer's by
      the sweeper; one task per recurring fire): tests.simulation.timer_checks.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.local.scheduler import rate_seconds
from runner.model import TaskStatus, can_transition
from tests.simulation.actions import is_final
from tests.simulation.faults import TABLE_WIDE, FaultKind
from tests.simulation.lambdas import Invocation
from tests.simulation.ledger import Event, Write
from tests.simulation.timer_checks import TimerChecks
from tests.simulation.world import World


@dataclass(frozen=True)
class Violation:
    invariant: str
    task: str | None
    message: str
    details: Mapping[str, Any] = field(default_factory=dict)
    defect: int | None = None

    def describe(self) -> str:
        where = f" [{self.task}]" if self.task else ""
        known = f" (known defect {self.defect})" if self.defect else ""
        return f"{self.invariant}{where}: {self.message}{known}"


@dataclass
class Checker:
    world: World
    violations: list[Violation] = field(default_factory=list)
    _events: int = 0
    _writes: int = 0
    _invocations: int = 0
    _latest_start: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    _running: set[tuple[str, str, int]] = field(default_factory=set)
    _succeeded: set[tuple[str, str, int]] = field(default_factory=set)
    _holders: dict[str, str] = field(default_factory=dict)
    _done: dict[tuple[str, str], tuple[int, int]] = field(default_factory=dict)
    _cancelled: dict[tuple[str, str], int] = field(default_factory=dict)
    overlaps: list[tuple[str, str, int, int]] = field(default_factory=list)
    doubles: list[tuple[str, str]] = field(default_factory=list)
    # (task, nonce, step name) -> the attempt whose record was written (S2).
    _steps: dict[tuple[str, str, str], int] = field(default_factory=dict)
    _timers: TimerChecks | None = None

    @property
    def timers(self) -> TimerChecks:
        """D1, D2, R1 (tests.simulation.timer_checks)."""
        if self._timers is None:
            periods = [rate_seconds(s.expression) for s in self.world.topology.schedules]
            self._timers = TimerChecks(self.world, self._add, max(periods, default=300.0))
        return self._timers

    def _add(self, invariant: str, task: str | None, message: str, **details: Any) -> Violation:
        violation = Violation(invariant, task, message, details)
        self.violations.append(violation)
        return violation

    # --- as the simulation goes ----------------------------------------------------------

    def step(self) -> list[Violation]:
        before = len(self.violations)
        events, writes = self.world.ledger.events, self.world.ledger.writes
        merged: list[Event | Write] = sorted(
            [*events[self._events :], *writes[self._writes :]], key=lambda r: r.seq
        )
        self._events, self._writes = len(events), len(writes)
        for record in merged:
            if isinstance(record, Event):
                self._event(record)
            else:
                self._write(record)
        invocations = self.world.lambdas.finished
        for invocation in invocations[self._invocations :]:
            self._invocation(invocation)
        self._invocations = len(invocations)
        return self.violations[before:]

    def _incarnation(self, task: str, nonce: str) -> tuple[str, str]:
        return (task, nonce)

    def _event(self, event: Event) -> None:
        self.timers.event(event)
        key = self._incarnation(event.task, event.nonce)
        claim = event.claim
        if event.kind == "start" and key in self._cancelled:
            self._add(
                "C1",
                event.task,
                f"attempt {event.attempt} started after the task was CANCELLED",
                attempt=event.attempt,
                env=event.env,
            )
        if event.kind == "start":
            if claim in self._running:
                self._add(
                    "I2",
                    event.task,
                    f"attempt {event.attempt} ran twice at once",
                    attempt=event.attempt,
                    env=event.env,
                )
            elif claim in self._succeeded:
                self._add(
                    "I2",
                    event.task,
                    f"attempt {event.attempt} ran again after it succeeded",
                    attempt=event.attempt,
                    env=event.env,
                )
            self._running.add(claim)
            latest = self._latest_start.get(key)
            if latest is None or event.attempt > latest[0]:
                self._latest_start[key] = (event.attempt, event.seq)
        elif event.kind == "end":
            self._running.discard(claim)
            if event.label == "ok":
                self._succeeded.add(claim)
        elif event.kind == "effect":
            latest = self._latest_start.get(key)
            if latest is not None and latest[0] > event.attempt:
                self.overlaps.append((event.task, event.nonce, event.attempt, latest[0]))
                self._add(
                    "I1",
                    event.task,
                    f"attempt {event.attempt} made its effect after attempt {latest[0]} started",
                    attempt=event.attempt,
                    later=latest[0],
                    env=event.env,
                    at=event.at,
                )
            done = self._done.get(key)
            if done is not None and done[1] != event.attempt:
                self.doubles.append(key)
            if event.label.startswith("step:"):
                name = event.label.removeprefix("step:")
                recorded = self._steps.get((event.task, event.nonce, name))
                if recorded is not None and recorded != event.attempt:
                    self._add(
                        "S2",
                        event.task,
                        f"step {name} ran again on attempt {event.attempt}, recorded by "
                        f"attempt {recorded}",
                        attempt=event.attempt,
                        env=event.env,
                    )

    def _write(self, write: Write) -> None:
        old, new = write.old or {}, write.new or {}
        old_status, new_status = old.get("status"), new.get("status")
        token_old, token_new = old.get("claim_token"), new.get("claim_token")
        if token_new and token_new != token_old:
            self._holders[str(token_new)] = write.actor
        self.timers.write(write)
        if write.new is None or write.old is None:
            return
        self._step_records(write, old, new)
        # A write that changes the status answers for the lease it leaves on the item:
        # only while the attempt it records still runs (its handler outlived the timeout
        # and could not be stopped: the lease holds the retry off, I1). A lease already on
        # an item out of PROCESSING that a redrive carries over unchanged is not its own
        # (it cannot know whether that work still runs).
        carried = old_status != "PROCESSING" and new.get("lease_expires_at") == old.get(
            "lease_expires_at"
        )
        lease_set = "lease_expires_at" in new and not carried
        if (
            new_status not in (old_status, "PROCESSING")
            and lease_set
            and _claim_of(write.task, new) not in self._running
        ):
            self._add(
                "I4",
                write.task,
                f"a lease was left on a {new_status} task",
                site=write.site,
                actor=write.actor,
            )
        if new.get("retries_exhausted") and not old.get("retries_exhausted"):
            # The Catch path (issue 11's I4): no claim token, no lease left behind.
            for attribute, name in (("claim_token", "claim token"), ("lease_expires_at", "lease")):
                if attribute in new:
                    self._add(
                        "I4",
                        write.task,
                        f"exhausted retries left the {name} behind",
                        site=write.site,
                        actor=write.actor,
                    )
        if old_status == "DONE" and new_status != "DONE":
            self._add(
                "I4",
                write.task,
                f"a DONE task was overwritten ({new_status})",
                site=write.site,
                actor=write.actor,
            )
        moved = old_status != new_status and _known(old_status) and _known(new_status)
        if moved and not can_transition(TaskStatus(str(old_status)), TaskStatus(str(new_status))):
            self._add(
                "I4",
                write.task,
                f"{old_status} → {new_status} is not a transition",
                site=write.site,
                actor=write.actor,
            )
        lease = old.get("lease_expires_at")
        # The store reads the clock as a datetime (microseconds): 562.9999999 is 563 there.
        now_epoch = int(round(write.at, 6))
        live = old_status == "PROCESSING" and lease is not None and float(lease) >= now_epoch
        changed = new_status != old_status or token_new != token_old
        holder = self._holders.get(str(token_old))
        if live and changed and holder != write.actor:
            self._add(
                "I4",
                write.task,
                f"a live claim (by {holder}) was overwritten by {write.actor} → {new_status}",
                site=write.site,
                actor=write.actor,
                holder=holder,
            )
        if new_status == "CANCELLED" and old_status != "CANCELLED":
            data = new.get("data")
            nonce = str(data.get("nonce", "")) if isinstance(data, dict) else ""
            self._cancelled[self._incarnation(write.task, nonce)] = write.seq
        if new_status == "DONE":
            nonce = (
                str((new.get("data") or {}).get("nonce", ""))
                if isinstance(new.get("data"), dict)
                else ""
            )
            self._done[(write.task, nonce)] = (write.seq, int(new.get("attempts", 0)))

    def _step_records(self, write: Write, old: dict[str, Any], new: dict[str, Any]) -> None:
        """S1: step records are written by the live claim only, and never replaced."""
        old_steps = old.get("steps") if isinstance(old.get("steps"), dict) else {}
        new_steps = new.get("steps") if isinstance(new.get("steps"), dict) else {}
        data = new.get("data")
        nonce = str(data.get("nonce", "")) if isinstance(data, dict) else ""
        for name in set(old_steps) - set(new_steps):  # retry-task --reset-steps
            self._steps.pop((write.task, nonce, name), None)
        for name, record in new_steps.items():
            before = old_steps.get(name)
            if before == record:
                continue
            holder = self._holders.get(str(old.get("claim_token")))
            if before is not None:
                self._add("S1", write.task, f"step {name}'s record was replaced", site=write.site)
            elif old.get("status") != "PROCESSING" or holder != write.actor:
                self._add(
                    "S1",
                    write.task,
                    f"step {name} was recorded by {write.actor}, not the live claim ({holder})",
                    site=write.site,
                    actor=write.actor,
                )
            attempt = record.get("attempt") if isinstance(record, dict) else None
            if isinstance(attempt, int):
                self._steps[(write.task, nonce, name)] = attempt

    def _invocation(self, invocation: Invocation) -> None:
        world = self.world
        function = invocation.function.logical_id
        mapped = {q.function.logical_id for q in world.queues}
        scheduled = {s.function_logical_id for s in world.topology.schedules}
        faulted = {f.task for f in invocation.faults}
        if invocation.outcome == "timeout" and not any(
            f.kind is FaultKind.TIMEOUT for f in invocation.faults
        ):
            self._add(
                "T",
                None,
                f"{invocation.id} ran past its {invocation.function.timeout:.0f} s timeout",
                invocation=invocation.id,
            )
        if function not in mapped | scheduled:
            return
        if invocation.outcome == "error" and TABLE_WIDE not in faulted:
            self._add(
                "I6",
                None,
                f"{invocation.id} raised {type(invocation.error).__name__}: "
                f"{str(invocation.error)[:160]}",
                invocation=invocation.id,
                error=type(invocation.error).__name__,
                text=str(invocation.error),
                faulted=sorted(faulted),
            )
        if invocation.outcome == "ok" and isinstance(invocation.result, dict):
            records = (invocation.event or {}).get("Records", [])
            tasks = {str(r["dynamodb"]["SequenceNumber"]): _task(r) for r in records}
            for failure in invocation.result.get("batchItemFailures") or []:
                task = tasks.get(str(failure.get("itemIdentifier")))
                if task not in faulted:
                    self._add(
                        "I6",
                        task,
                        f"{invocation.id} reported the record failed with no fault on its task",
                        invocation=invocation.id,
                    )

    # --- once settled --------------------------------------------------------------------

    def _count_doubles(self) -> None:
        """Effects of two overlapping attempts (both made one): double effects."""
        effects = {
            (e.task, e.nonce, e.attempt) for e in self.world.ledger.events if e.kind == "effect"
        }
        for task, nonce, _attempt, later in self.overlaps:
            if (task, nonce, later) in effects:
                self.doubles.append((task, nonce))

    def final(self) -> list[Violation]:
        before = len(self.violations)
        world = self.world
        self._count_doubles()
        self.timers.final()
        attribute = world.topology.table.ttl_attribute
        for info in world.tasks.values():
            if info.deleted:
                if not info.final_when_deleted:
                    deleted = [
                        w for w in world.ledger.writes if w.task == info.id and w.new is None
                    ]
                    old = deleted[-1].old if deleted and deleted[-1].old else {}
                    self._add(
                        "I3",
                        info.id,
                        f"TTL deleted the task while {_status(old)}",
                        **_state(world, old),
                    )
                continue
            item = world.snapshot(info.id)
            if item is None:
                self._add("I3", info.id, "the task item is gone")
                continue
            if not is_final(item):
                self._add("I3", info.id, _stuck(world, item), **_state(world, item))
            elif attribute and attribute not in item:
                self._add(
                    "I5",
                    info.id,
                    f"final ({_status(item)}) without {attribute}",
                    **_state(world, item),
                )
        return self.violations[before:]


def _claim_of(task: str, item: Mapping[str, Any]) -> tuple[str, str, int]:
    """The run (task, nonce, attempt) whose outcome an item records."""
    data = item.get("data")
    nonce = str(data.get("nonce", "")) if isinstance(data, dict) else ""
    return (task, nonce, int(item.get("attempts", 0) or 0))


def _known(status: Any) -> bool:
    return status in {s.value for s in TaskStatus}


def _task(record: Mapping[str, Any]) -> str:
    return str(record.get("dynamodb", {}).get("Keys", {}).get("id", {}).get("S", "?"))


def _status(item: Mapping[str, Any]) -> str:
    status = str(item.get("status"))
    if status == "FAILED":
        status += (
            " exhausted"
            if item.get("retries_exhausted")
            else (" retryable" if item.get("retryable") else " permanent")
        )
    return status


def _state(world: World, item: Mapping[str, Any]) -> dict[str, Any]:
    episode = int(item.get("episode", 0) or 0)
    executions = [e for e in world.sfn.executions.values() if e.task_id == item.get("id")]
    return {
        "status": _status(item),
        "episode": episode,
        "attempts": item.get("attempts"),
        "claimed_by": item.get("claimed_by"),
        "executions": [(e.name, e.status) for e in executions],
        "size": len(str(item)),
        "malformed": not isinstance(item.get("data"), dict) or "type" not in item,
    }


def _stuck(world: World, item: Mapping[str, Any]) -> str:
    state = _state(world, item)
    running = [name for name, status in state["executions"] if status == "RUNNING"]
    return (
        f"stuck {state['status']} (episode {state['episode']}, attempts {state['attempts']}, "
        f"{'execution running' if running else 'no running execution'})"
    )
