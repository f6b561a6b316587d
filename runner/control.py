"""A running claim's control: whether its cancel was requested, and where its progress
goes. Shared by the handler (through `TaskContext`), the heartbeat that learns of a
cancel, and the invoker that cancels an async handler at its next await.

Pure threading: task modules import `runner.context`, which reads this (no botocore).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol


class ProgressSink(Protocol):
    def report(self, done: float, total: float | None = None, message: str = "") -> None: ...


class TaskControl:
    """Set once: a cancel was requested (or the claim was lost); hooks run on it."""

    def __init__(self, progress: ProgressSink | None = None) -> None:
        self.progress = progress
        self.reason = ""
        # The claim was lost (not a user's cancel): the outcome's write will not hold.
        self.lost = False
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._hooks: list[Callable[[], None]] = []

    @property
    def cancel_requested(self) -> bool:
        return self._event.is_set()

    @property
    def cancelled_by_request(self) -> bool:
        """True if `cancel-task` asked for it (not a lost claim)."""
        return self._event.is_set() and not self.lost

    def request_cancel(self, reason: str = "cancel requested", *, lost: bool = False) -> None:
        """Ask the handler to stop; runs the hooks (once)."""
        with self._lock:
            self.lost = self.lost or lost
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            hooks = list(self._hooks)
        for hook in hooks:
            hook()

    def on_cancel(self, hook: Callable[[], None]) -> Callable[[], None]:
        """Run `hook` when a cancel is requested (at once if it was); returns its remover."""
        with self._lock:
            already = self._event.is_set()
            if not already:
                self._hooks.append(hook)
        if already:
            hook()

        def remove() -> None:
            with self._lock:
                if hook in self._hooks:
                    self._hooks.remove(hook)

        return remove
