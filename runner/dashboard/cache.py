"""A small time-bounded cache: a value is computed once per key and reused for a few
seconds, however many pages ask at once (one computes; the others wait for it, or, with
`stale_ok`, take the last value at once rather than wait behind a slow computation)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Cached(Generic[T]):
    value: T
    computed_at: float  # time.monotonic()
    fresh: bool  # computed for this call, not reused


class TtlCache(Generic[T]):
    """Values by key, each kept `ttl` seconds (`ttl=None`: kept until evicted)."""

    def __init__(
        self,
        ttl: float | None,
        *,
        max_entries: int = 1024,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._values: dict[Hashable, tuple[float, T]] = {}
        self._locks: dict[Hashable, threading.Lock] = {}
        self._guard = threading.Lock()

    def get(self, key: Hashable, compute: Callable[[], T], *, stale_ok: bool = False) -> Cached[T]:
        hit = self._lookup(key)
        if hit is not None:
            return hit
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        if not lock.acquire(blocking=False):
            # Another request is computing it (slow: DynamoDB retrying a throttle, say):
            # with `stale_ok`, the last value now rather than a thread held until then.
            last = self.last(key) if stale_ok else None
            if last is not None:
                return last
            lock.acquire()
        try:  # one computes; the others find its value when they get the lock
            hit = self._lookup(key)
            if hit is not None:
                return hit
            value = compute()
            now = self._clock()
            with self._guard:
                if len(self._values) >= self.max_entries:
                    self._values.pop(next(iter(self._values)))
                self._values[key] = (now, value)
            return Cached(value, now, True)
        finally:
            lock.release()

    def last(self, key: Hashable) -> Cached[T] | None:
        """The last value computed, however old (not fresh)."""
        with self._guard:
            found = self._values.get(key)
        return None if found is None else Cached(found[1], found[0], False)

    def peek(self, key: Hashable) -> Cached[T] | None:
        """The value if it is there and fresh; computes nothing."""
        return self._lookup(key)

    def put(self, key: Hashable, value: T) -> None:
        with self._guard:
            self._values[key] = (self._clock(), value)

    def clear(self) -> None:
        with self._guard:
            self._values.clear()

    def _lookup(self, key: Hashable) -> Cached[T] | None:
        with self._guard:
            found = self._values.get(key)
        if found is None:
            return None
        at, value = found
        if self.ttl is not None and self._clock() - at >= self.ttl:
            return None
        return Cached(value, at, False)
