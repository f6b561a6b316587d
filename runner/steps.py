"""Durable steps: `ctx.step(name, fn, *args)` runs `fn` once per task, across attempts.

The first attempt that completes a step records its result on the task (one conditional
write, `runner.store.steps`, only while that attempt's claim holds); every later attempt
of the task (a stream retry, the retry workflow, the sweeper, `retry-task`) gets the
recorded result back without calling `fn`. A step that raises records nothing, so it
runs again next attempt. The records come with the claim (its write returns the item),
so resuming costs no read; a task without steps makes no step write.

What is guaranteed: at most one completed recording per step name. Not guaranteed: that
`fn` runs once. An attempt that dies after `fn`'s effect but before its record runs it
again; give effects `ctx.step_key(name)`, the same on every attempt.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from runner.errors import StepError, StepNotRecorded, StepNotStorable
from runner.payloads import (
    INLINE_MAX_BYTES,
    MAX_PAYLOAD_BYTES,
    encoded_size,
    name_digest,
    task_prefix,
)

if TYPE_CHECKING:
    from runner.model import StepRecord, Task
    from runner.store import TaskStore

T = TypeVar("T")
# A step name: a short label, unique within the task.
MAX_STEP_NAME_CHARS = 128


def check_name(name: Any) -> str:
    """The step name, if it is one (1 to 128 printable characters); StepError if not."""
    if not isinstance(name, str) or not 1 <= len(name) <= MAX_STEP_NAME_CHARS:
        raise StepError(f"a step name is a string of 1 to {MAX_STEP_NAME_CHARS} characters")
    if not name.isprintable():
        raise StepError("a step name holds printable characters only")
    return name


class StepRecorder:
    """One attempt's steps: what earlier attempts recorded, and recording new ones."""

    def __init__(self, store: TaskStore, task: Task) -> None:
        self.store = store
        self.task = task
        self._recorded: dict[str, StepRecord] = dict(task.steps or {})
        self._map_exists = task.steps is not None
        self._used: set[str] = set()
        # The first record creates the map; later ones add to it: one write at a time.
        self._writing = threading.Lock()
        # What is known, never held across a call: the runner reads it after a handler
        # that timed out, whose thread may still be in a write.
        self._state = threading.Lock()
        self.offloaded = False

    @property
    def steps(self) -> dict[str, StepRecord] | None:
        """The steps as the item now holds them (None: it has no map)."""
        with self._state:
            return dict(self._recorded) if self._map_exists else None

    def new_try(self) -> None:
        """A new try of the handler within this attempt (an in-process retry,
        `runner.local_retries`): each name may be used once again; what earlier tries
        recorded is returned, what they did not runs again."""
        with self._state:
            self._used.clear()

    def begin(self, name: Any) -> StepRecord | None:
        """Start step `name` in this try: its record if an earlier try or attempt made one."""
        name = check_name(name)
        with self._state:
            if name in self._used:
                raise StepError(f"step {name!r} was already used in this attempt")
            self._used.add(name)
            return self._recorded.get(name)

    def recorded_value(self, record: StepRecord) -> Any:
        """A record's result (loaded from the payload bucket if it was offloaded)."""
        return self.store.payloads.load(record.result)

    def complete(self, name: str, result: Any) -> Any:
        """Record step `name`'s result under this attempt's claim; the stored JSON value."""
        from runner.items import iso, task_to_item
        from runner.limits import MAX_INSERT_BYTES, producer_size, storable_json
        from runner.model import StepRecord

        if isinstance(result, BaseModel):
            result = result.model_dump(mode="json")
        try:
            value = storable_json(result)
        except ValueError as exc:
            raise StepNotStorable(f"step {name!r}: its result cannot be stored: {exc}") from None
        size = encoded_size(value)
        if size > MAX_PAYLOAD_BYTES:
            raise StepNotStorable(
                f"step {name!r}: its result is {size} bytes; the cap is {MAX_PAYLOAD_BYTES}"
            )
        payloads = self.store.payloads
        with self._writing:
            with self._state:
                recorded, map_exists = dict(self._recorded), self._map_exists
            record = StepRecord(
                completed_at=iso(self.store.clock()),
                attempt=self.task.attempts,
                bytes=size,
                result=value,
            )
            projected = task_to_item(
                self.task.model_copy(update={"steps": {**recorded, name: record}})
            )
            inline = size <= INLINE_MAX_BYTES and producer_size(projected) <= MAX_INSERT_BYTES
            if not inline:
                if not payloads.enabled:
                    raise StepNotStorable(
                        f"step {name!r}: its result ({size} bytes) does not fit its item and"
                        " no payload bucket is configured (TASK_RUNNER_PAYLOAD_BUCKET)"
                    )
                key = (
                    f"{task_prefix(self.task.id, self.task.created_at)}steps/"
                    f"{name_digest(name)}-{(self.task.claim_token or '')[:12]}.json"
                )
                record = record.model_copy(update={"result": payloads.put(key, value)})
                projected = task_to_item(
                    self.task.model_copy(update={"steps": {**recorded, name: record}})
                )
                if producer_size(projected) > MAX_INSERT_BYTES:
                    payloads.delete(record.result)
                    raise StepNotStorable(f"step {name!r}: the task's item has no room left")
            try:
                self.store.record_step(
                    self.task,
                    name,
                    record,
                    steps_exist=map_exists,
                    offloaded=not inline,
                )
            except StepNotRecorded:
                if not inline:
                    # No item refers to it: the store raises this only when the item
                    # holds no such record (an applied try is recognised, not refused).
                    payloads.delete(record.result)
                raise
            except Exception:
                if not inline:
                    # The write may have applied (its reply lost): keep the object; the
                    # outcome marks the item as having payloads, so it goes with the task.
                    with self._state:
                        self.offloaded = True
                raise
            with self._state:
                self._recorded[name] = record
                self._map_exists = True
                self.offloaded = self.offloaded or not inline
        return value


class StepsMixin:
    """`step`, `astep` and `step_key` for TaskContext (`step_recorder` set by the runner)."""

    step_recorder: StepRecorder | None
    idempotency_key: str

    def _recorder(self) -> StepRecorder:
        if self.step_recorder is None:
            raise StepError("durable steps need the context the runner gives a handler")
        return self.step_recorder

    def step(self, name: str, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> T | Any:
        """Run `fn(*args, **kwargs)` as step `name`, or return what an earlier attempt
        recorded for it. Its result must be JSON; it is returned as stored (JSON)."""
        recorder = self._recorder()
        record = recorder.begin(name)
        if record is not None:
            return recorder.recorded_value(record)
        return recorder.complete(name, fn(*args, **kwargs))

    async def astep(
        self, name: str, fn: Callable[..., Awaitable[T]], /, *args: Any, **kwargs: Any
    ) -> T | Any:
        """`step` for a coroutine function: `await ctx.astep("charge", charge, order_id)`."""
        recorder = self._recorder()
        record = recorder.begin(name)
        if record is not None:
            return await asyncio.to_thread(recorder.recorded_value, record)
        result = await fn(*args, **kwargs)
        return await asyncio.to_thread(recorder.complete, name, result)

    def step_key(self, name: str) -> str:
        """An idempotency key for step `name`: the same on every attempt of the task."""
        return f"{self.idempotency_key}:step:{check_name(name)}"
