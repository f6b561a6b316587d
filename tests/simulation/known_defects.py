"""Defects of issue 11 that today's code has, and how to recognise their violations.

This is the one place that knows about particular bugs; the harness itself does not.
`make test`'s quick pass reports a violation listed here as "known defect N" and fails
only on the others. When a fix lands, delete its entry: its violations then fail the
quick pass again if the fix is incomplete. An entry that matches nothing in a long run
(`make faults` prints the counts) is a sign its defect is fixed.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from runner.item_size import MAX_ITEM_BYTES, item_size

if TYPE_CHECKING:
    from tests.simulation.invariants import Violation
    from tests.simulation.world import World

# An item this close to 400 KB cannot take an error and an attempt record.
NEAR_LIMIT = MAX_ITEM_BYTES - 8 * 1024


@dataclass(frozen=True)
class Defect:
    number: int
    title: str
    matches: Callable[[Violation, World], bool]


def _item(world: World, violation: Violation) -> Mapping[str, Any]:
    if not violation.task:
        return {}
    return world.snapshot(violation.task) or world.items.get(violation.task) or {}


def _type(world: World, violation: Violation) -> str:
    info = world.tasks.get(violation.task or "")
    return info.type if info else ""


def _large(world: World, violation: Violation) -> bool:
    item = _item(world, violation)
    return bool(item) and item_size(dict(item)) > NEAR_LIMIT


def _writes(world: World, task: str | None) -> list[Any]:
    return [w for w in world.ledger.writes if w.task == task]


def _last_site(world: World, violation: Violation) -> str:
    """The site of the last write the runner made to the task (not TTL's delete)."""
    writes = [w for w in _writes(world, violation.task) if not w.site.startswith("TTL:")]
    return writes[-1].site if writes else ""


def _starts(world: World, task: str | None, attempt: int) -> int:
    return sum(
        1
        for e in world.ledger.events
        if e.task == task and e.attempt == attempt and e.kind == "start"
    )


_NUMBER_REFUSALS = ("NaN", "infinity", "magnitude", "significant digits")


def _sweep_error(v: Violation) -> str:
    """The text of a sweep's exception, for an I6 raised by the sweep function."""
    if v.invariant != "I6" or not str(v.details.get("invocation", "")).startswith("Sweep"):
        return ""
    return str(v.details.get("text", "")) or "?"


def _poisoner(world: World) -> int | None:
    """The defect that made sweeps raise in this run (they then recover nothing)."""
    for invocation in world.lambdas.finished:
        if invocation.function.logical_id.startswith("Sweep") and invocation.outcome == "error":
            text = str(invocation.error)
            return 9 if any(r in text for r in _NUMBER_REFUSALS) else 1
    return None


def _d1(v: Violation, world: World) -> bool:
    text = _sweep_error(v)
    if text and not any(r in text for r in _NUMBER_REFUSALS):
        # Too large to write, or throttled past the budget: either way the sweeper stops
        # at that task (only TaskConflict is caught) and recovers nothing after it.
        return True
    if v.invariant in ("I3", "I6") and _large(world, v):
        return True
    return _stuck_behind_a_poisoned_sweeper(v, world) and _poisoner(world) == 1


def _stuck_behind_a_poisoned_sweeper(v: Violation, world: World) -> bool:
    """A task only the sweeper could bring back (an expired lease, a lost PENDING)."""
    if v.invariant != "I3" or v.details.get("malformed"):
        return False
    status = v.details.get("status")
    return status == "PENDING" or (
        status == "PROCESSING" and v.details.get("claimed_by") != "workflow"
    )


def _d2(v: Violation, world: World) -> bool:
    if v.invariant == "I4":
        site = str(v.details.get("site", ""))
        actor = str(v.details.get("actor", ""))
        return site.startswith("ASL:") or actor.startswith("sfn:")
    return False


def _d3(v: Violation, world: World) -> bool:
    if v.invariant != "I3":
        return False
    status = str(v.details.get("status", ""))
    running = any(s == "RUNNING" for _, s in v.details.get("executions", []))
    if running:
        return False
    if status == "FAILED retryable":
        return not _d8(v, world)
    if status == "PROCESSING":
        return v.details.get("claimed_by") == "workflow"
    if status == "RETRYING":
        return not _last_site(world, v).startswith("TaskStore.start_retry_episode")
    return False


def _d4(v: Violation, world: World) -> bool:
    if v.invariant == "I2":  # a timed-out try, still running, retried in-process
        return True
    if v.invariant == "I1":
        return _starts(world, v.task, int(v.details.get("attempt", 0))) <= 1
    if v.invariant == "T":
        return "ProcessStream" in str(v.details.get("invocation", ""))
    return False


def _d6(v: Violation, world: World) -> bool:
    return (
        v.invariant == "I3"
        and v.details.get("status") == "RETRYING"
        and _last_site(world, v).startswith("TaskStore.start_retry_episode")
    )


def _d7(v: Violation, world: World) -> bool:
    return v.invariant == "I1" and _starts(world, v.task, int(v.details.get("attempt", 0))) > 1


def _d8(v: Violation, world: World) -> bool:
    """A retry execution name taken by an earlier task with the same id (TTL reuse)."""
    info = world.tasks.get(v.task or "")
    if v.invariant != "I3" or info is None:
        return False
    return any(
        e.task_id == info.id and e.start < info.created_at for e in world.sfn.executions.values()
    )


def _d9(v: Violation, world: World) -> bool:
    if _stuck_behind_a_poisoned_sweeper(v, world) and _poisoner(world) == 9:
        return True
    if v.invariant != "I6":
        return False
    text = str(v.details.get("text", ""))
    return _type(world, v) == "SIM_ODD_RESULT" or any(r in text for r in _NUMBER_REFUSALS)


def _d10(v: Violation, world: World) -> bool:
    return v.invariant == "I5"


def _d11(v: Violation, world: World) -> bool:
    return v.invariant == "T" and "Sweep" in str(v.details.get("invocation", ""))


def _d13(v: Violation, world: World) -> bool:
    return v.invariant == "I3" and bool(v.details.get("malformed"))


def _h101(v: Violation, world: World) -> bool:
    return (
        v.invariant == "I4"
        and v.message == "PENDING → FAILED is not a transition"
        and str(v.details.get("site", "")).startswith("TaskStore.fail_unreadable")
    )


KNOWN: tuple[Defect, ...] = (
    Defect(1, "near-400 KB tasks poison the sweeper", _d1),
    Defect(2, "unlisted errors become permanent; the Catch overwrites live claims", _d2),
    Defect(3, "a routing record out of retries strands the task", _d3),
    Defect(4, "a timeout does not stop the handler", _d4),
    Defect(6, "retry-task can leave a task RETRYING with no execution", _d6),
    Defect(7, "local_retries outlive the lease", _d7),
    Defect(8, "execution names collide (ids reused after TTL)", _d8),
    Defect(9, "results DynamoDB cannot store escape handling", _d9),
    Defect(10, "some final tasks never expire", _d10),
    Defect(11, "the sweeper's time budget is stale", _d11),
    Defect(13, "malformed PENDING orphans are skipped forever", _d13),
    # Found by this harness, not in the issue: runner/model.py's TRANSITIONS (and the
    # README's table) allow PENDING only to PROCESSING, but a malformed task is failed
    # from PENDING (TaskStore.fail_unreadable).
    Defect(101, "model: PENDING → FAILED (malformed task) is missing from TRANSITIONS", _h101),
)


def classify(violation: Violation, world: World) -> int | None:
    """The known defect a violation shows, or None (then it is news)."""
    for defect in KNOWN:
        if defect.matches(violation, world):
            return defect.number
    return None


def title(number: int) -> str:
    return next((d.title for d in KNOWN if d.number == number), "?")
