"""`ctx.report_progress`: how far a running handler got, stored on its task as `progress`.

The first report is written at once; later ones at most every `PROGRESS_INTERVAL_SECONDS`
per task, the latest value winning: a report inside the interval is kept and written
once the interval has ended (started by the claim's heartbeat, which looks every second:
`flush_due`), or with the claim's final write if the handler ends first. Writes run in
threads of the heartbeat's, never in the handler's (a report from an async handler does
not hold its event loop), one at a time and never older than one already sent; the
store's write is also conditional on the report's age, so a write given up by its
caller that lands late cannot replace a later one (`runner.store.control`). The final
write carries the latest report unless it is known to be stored. Each write is
conditional on the claim and leaves `status`, `status_shard` and `updated_at` alone; one
that fails is logged, never raised (and tried again once due, unless a later report or
a lost claim makes it moot).
"""

from __future__ import annotations

import decimal
import math
import numbers
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from runner.errors import TaskConflict
from runner.items import iso
from runner.limits import PROGRESS_MESSAGE_BYTES, cut
from runner.logs import get_logger

PROGRESS_INTERVAL_SECONDS = 5.0


def _number(name: str, value: Any) -> float | int:
    """A count as stored: any real number (numpy's, a Decimal) as a plain int or float."""
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        value = int(value)
    elif isinstance(value, numbers.Real | decimal.Decimal) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, int | float) or isinstance(value, bool) or not math.isfinite(value):
        raise ValueError(f"report_progress: {name} must be a finite number, not {value!r}")
    if value < 0:
        raise ValueError(f"report_progress: {name} must not be negative, not {value!r}")
    return value


def progress_value(
    done: float, total: float | None, message: str, updated_at: datetime
) -> dict[str, Any]:
    """The stored `progress` map; ValueError for a value it cannot hold."""
    value: dict[str, Any] = {"done": _number("done", done), "updated_at": iso(updated_at)}
    if total is not None:
        value["total"] = _number("total", total)
    if not isinstance(message, str):
        raise ValueError(f"report_progress: message must be text, not {type(message).__name__}")
    value["message"] = cut(message, PROGRESS_MESSAGE_BYTES)
    return value


class ProgressReporter:
    """One claim's progress reports: throttled to one write per interval, one write at a
    time, never one older than a write already sent (so the last to land is the latest
    sent), and the latest report not known to be stored handed to the final write."""

    def __init__(
        self,
        write: Callable[[dict[str, Any]], bool | None],
        *,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        interval: float = PROGRESS_INTERVAL_SECONDS,
        task_id: str = "",
        start: Callable[[Callable[[], None]], None] | None = None,
    ) -> None:
        self._write = write
        self._clock = clock
        self._monotonic = monotonic
        self.interval = interval
        self.task_id = task_id
        # Where a write runs: a thread of the heartbeat's (`runner.heartbeat`), never the
        # handler's (an async handler's event loop is not held up by a write and its
        # retries); None: the caller's thread.
        self._start = start
        # Held only to read or change the state below, never across a write.
        self._lock = threading.Lock()
        self._last: float | None = None  # when the last write started (monotonic)
        self._latest: dict[str, Any] | None = None  # the latest report
        self._unsent: dict[str, Any] | None = None  # the latest report, if not yet sent
        self._stored: dict[str, Any] | None = None  # the newest report known stored
        self._sending = False  # a write is in flight (one at a time)
        self._lost = False  # the claim is gone: nothing more can be written
        self._closed = False
        self.writes = 0

    def report(self, done: float, total: float | None = None, message: str = "") -> None:
        value = progress_value(done, total, message, self._clock())
        with self._lock:
            if self._closed:
                return
            self._latest = self._unsent = value
            begin = self._begin_send()
        if begin:
            self._dispatch()

    def due(self) -> bool:
        """True if a report kept back has waited out its interval and no write is in
        flight (`flush_due` then writes it)."""
        with self._lock:
            return self._due()

    def flush_due(self) -> None:
        """Start writing the report kept back, once its interval has ended."""
        with self._lock:
            begin = self._begin_send()
        if begin:
            self._dispatch()

    def close(self) -> dict[str, Any] | None:
        """Stop reporting; the latest report if it is not known to be stored (for the
        final write, which then carries it: a write still in flight cannot land after
        it, its condition needs the claim)."""
        with self._lock:
            self._closed = True
            self._unsent = None
            latest = self._latest
        return None if latest is None or latest is self._stored or self._lost else latest

    # --- one write at a time ---------------------------------------------------------

    def _due(self, *, sender: bool = False) -> bool:
        """(Under the lock.) A report waits, its interval is over, and no write is in
        flight (but the `sender`'s own)."""
        if self._unsent is None or self._closed or self._lost:
            return False
        if self._sending and not sender:
            return False
        return self._last is None or self._monotonic() - self._last >= self.interval

    def _begin_send(self) -> bool:
        """(Under the lock.) True if the caller is to start the writer."""
        if not self._due():
            return False
        self._sending = True
        return True

    def _dispatch(self) -> None:
        if self._start is None:
            self._drain()
            return
        try:
            self._start(self._drain)
        except Exception as exc:  # no thread to write with: the final write carries it
            with self._lock:
                self._sending = False
            self._warn(exc)

    def _drain(self) -> None:
        """Write the latest report, then each one that is due by the time that write
        returns; the heartbeat's tick starts the next once it is due."""
        with self._lock:
            value = self._take()
            if value is None:  # closed since it was started
                self._sending = False
        while value is not None:
            outcome = self._send(value)
            with self._lock:
                if outcome == "stored":
                    self._stored = value
                elif outcome == "lost":
                    self._lost = True
                elif self._unsent is None and not self._closed:
                    self._unsent = value  # not written: tried again once due
                value = self._take() if self._due(sender=True) else None
                if value is None:
                    self._sending = False

    def _take(self) -> dict[str, Any] | None:
        value, self._unsent = self._unsent, None
        if value is not None:
            self._last = self._monotonic()
        return value

    def _send(self, value: dict[str, Any]) -> str:
        try:
            self._write(value)  # False: a later report is stored already; as good
        except TaskConflict as exc:  # the claim is gone (or ended: the outcome has it)
            if not self._closed:
                self._warn(exc)
            return "lost"
        except Exception as exc:  # progress is informative: it never fails the task
            self._warn(exc)
            return "failed"
        self.writes += 1
        return "stored"

    def _warn(self, exc: Exception) -> None:
        get_logger().warning(
            "progress not written",
            extra={"task_id": self.task_id, "error_type": type(exc).__name__},
        )
