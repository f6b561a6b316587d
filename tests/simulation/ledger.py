"""What happened, in order: handler runs and their side effects, and every write to the
tasks table with its item before and after and who made it. The invariants are checked
on these records (tests.simulation.invariants)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Event:
    """A handler run began (`start`), made its side effect (`effect`) or ended (`end`)."""

    seq: int
    at: float
    kind: str
    task: str
    nonce: str
    attempt: int
    env: str
    label: str = ""

    @property
    def claim(self) -> tuple[str, str, int]:
        return (self.task, self.nonce, self.attempt)


@dataclass(frozen=True)
class Write:
    """One write that changed a task item: by whom (an invocation, an execution), where."""

    seq: int
    at: float
    task: str
    site: str
    actor: str
    old: dict[str, Any] | None
    new: dict[str, Any] | None

    def field(self, name: str) -> tuple[Any, Any]:
        return (self.old or {}).get(name), (self.new or {}).get(name)


@dataclass
class Ledger:
    events: list[Event] = field(default_factory=list)
    writes: list[Write] = field(default_factory=list)
    _seq: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    def next_seq(self) -> int:
        return next(self._seq)

    def event(
        self, at: float, kind: str, task: str, nonce: str, attempt: int, env: str, label: str = ""
    ) -> Event:
        event = Event(self.next_seq(), at, kind, task, nonce, attempt, env, label)
        self.events.append(event)
        return event

    def write(
        self,
        at: float,
        task: str,
        site: str,
        actor: str,
        old: dict[str, Any] | None,
        new: dict[str, Any] | None,
    ) -> Write:
        record = Write(self.next_seq(), at, task, site, actor, old, new)
        self.writes.append(record)
        return record
