"""`ctx.report_progress`: how far a running handler got, stored on its task as `progress`.

The first report is written at once; later ones at most every `PROGRESS_INTERVAL_SECONDS`
per task, the latest value winning: a report inside the interval is kept and written
once the interval has ended (by the claim's heartbeat, which looks every second and
writes it from a thread of its own: `flush_due`), or with the claim's final write if the
handler ends first. Each write is
conditional on the claim and leaves `status`, `status_shard` and `updated_at` alone
(`runner.store.control`); one that fails is logged, never raised.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from runner.items import iso
from runner.limits import PROGRESS_MESSAGE_BYTES, cut
from runner.logs import get_logger

PROGRESS_INTERVAL_SECONDS = 5.0


def _number(name: str, value: Any) -> float | int:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
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
    """One claim's progress reports, throttled to one write per interval."""

    def __init__(
        self,
        write: Callable[[dict[str, Any]], None],
        *,
        clock: Callable[[], datetime],
        monotonic: Callable[[], float] = time.monotonic,
        interval: float = PROGRESS_INTERVAL_SECONDS,
        task_id: str = "",
    ) -> None:
        self._write = write
        self._clock = clock
        self._monotonic = monotonic
        self.interval = interval
        self.task_id = task_id
        self._lock = threading.Lock()
        self._last: float | None = None
        self._pending: dict[str, Any] | None = None
        self._closed = False
        self.writes = 0

    def report(self, done: float, total: float | None = None, message: str = "") -> None:
        value = progress_value(done, total, message, self._clock())
        with self._lock:
            if self._closed:
                return
            now = self._monotonic()
            if self._last is None or now - self._last >= self.interval:
                self._last = now
                self._pending = None
            else:
                self._pending = value
                return
        self._send(value)

    def due(self) -> bool:
        """True if a report kept back has waited out its interval (`flush_due` writes it)."""
        with self._lock:
            return self._due()

    def _due(self) -> bool:
        if self._pending is None or self._closed or self._last is None:
            return False
        return self._monotonic() - self._last >= self.interval

    def flush_due(self) -> None:
        """Write the report kept back, once its interval has ended."""
        with self._lock:
            if not self._due() or self._pending is None:
                return
            value, self._pending, self._last = self._pending, None, self._monotonic()
        self._send(value)

    def _send(self, value: dict[str, Any]) -> None:
        try:
            self._write(value)
            self.writes += 1
        except Exception as exc:  # progress is informative: it never fails the task
            get_logger().warning(
                "progress not written",
                extra={"task_id": self.task_id, "error_type": type(exc).__name__},
            )

    def close(self) -> dict[str, Any] | None:
        """Stop reporting; the latest report not yet written (for the final write)."""
        with self._lock:
            self._closed = True
            value, self._pending = self._pending, None
        return value
