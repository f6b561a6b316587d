"""Stop the local stack when the process that started it is gone.

`make dev` execs the stack as make's child. A SIGTERM to make reaches it (make passes
SIGTERM on to its children), but make killed outright (SIGKILL, the OOM killer) passes
nothing on: the stack, re-parented, would keep its port and its endpoint process with no
one to stop it. Polling the parent's pid works wherever Python does (Linux's
PR_SET_PDEATHSIG would not on macOS) and costs one system call per poll.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

# How soon a dead parent is noticed.
POLL_SECONDS = 0.5


def watch_parent(on_gone: Callable[[], None], *, poll_seconds: float = POLL_SECONDS) -> None:
    """Call `on_gone` (once, from a daemon thread) when this process's parent has exited."""
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_seconds)
        on_gone()

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
