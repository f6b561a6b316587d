"""Lambda handlers for the execution-environment tests (run in worker processes)."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Any


def echo(event: Any, context: Any) -> dict[str, Any]:
    """The event, the context's view and the environment a test asks about."""
    names = event.get("env", []) if isinstance(event, dict) else []
    return {
        "event": event,
        "pid": os.getpid(),
        "remaining_ms": context.get_remaining_time_in_millis(),
        "request_id": context.aws_request_id,
        "function_name": context.function_name,
        "env": {name: os.environ.get(name) for name in names},
    }


def fail(event: Any, context: Any) -> None:
    raise ValueError(f"failed on purpose: {event.get('why', '')}")


def sleep(event: Any, context: Any) -> dict[str, Any]:
    time.sleep(float(event["seconds"]))
    return {"slept": event["seconds"], "pid": os.getpid()}


def tick(event: Any, context: Any) -> dict[str, Any]:
    """Append a line to a file every 50 ms for `seconds`."""
    path = Path(event["path"])
    end = time.monotonic() + float(event["seconds"])
    while time.monotonic() < end:
        with path.open("a") as f:
            f.write(f"{time.time()}\n")
        time.sleep(0.05)
    return {"pid": os.getpid()}


def big(event: Any, context: Any) -> str:
    """A response of `bytes` characters."""
    return "x" * int(event["bytes"])


def allocate(event: Any, context: Any) -> dict[str, Any]:
    """Hold `mb` MB (touched, so resident) for `seconds`."""
    blob = b"\x01" * (int(event["mb"]) * 1024 * 1024)
    time.sleep(float(event.get("seconds", 1)))
    return {"held": len(blob), "pid": os.getpid()}


def crash(event: Any, context: Any) -> None:
    os._exit(int(event.get("code", 3)))


def background(event: Any, context: Any) -> dict[str, Any]:
    """Start a thread that appends a line to a file every 50 ms, and return at once."""
    path = Path(event["path"])

    def tick() -> None:
        while True:
            with path.open("a") as f:
                f.write(f"{time.time()}\n")
            time.sleep(0.05)

    if not getattr(background, "started", False):
        threading.Thread(target=tick, daemon=True).start()
        background.started = True  # type: ignore[attr-defined]
        deadline = time.monotonic() + 5
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.01)  # it has started ticking
    time.sleep(float(event.get("then_sleep", 0)))
    return {"pid": os.getpid()}


def spawn(event: Any, context: Any) -> dict[str, Any]:
    """Start a child process that ticks into a file, and return at once (or sleep on)."""
    import subprocess
    import sys

    loop = "import time,sys\nwhile True:\n open(sys.argv[1],'a').write('t\\n'); time.sleep(0.05)"
    child = subprocess.Popen(
        [sys.executable, "-c", loop, event["path"]],
        start_new_session=bool(event.get("new_session")),  # out of the worker's group
    )
    deadline = time.monotonic() + 5
    while not Path(event["path"]).exists() and time.monotonic() < deadline:
        time.sleep(0.01)  # it has started ticking
    time.sleep(float(event.get("then_sleep", 0)))
    return {"child": child.pid}


def fork_and_die(event: Any, context: Any) -> None:
    """Fork a child that keeps every file the runtime has open, then die."""
    if os.fork() == 0:
        time.sleep(30)
        os._exit(0)
    os._exit(5)


def inspect(event: Any, context: Any) -> dict[str, Any]:
    """The interpreter, sys.path and which of `event["modules"]` would import."""
    import importlib.util
    import sys

    def importable(name: str) -> bool:
        try:
            return importlib.util.find_spec(name) is not None
        except ModuleNotFoundError:  # its parent package is not there
            return False

    return {
        "version": list(sys.version_info[:2]),
        "executable": sys.executable,
        "path": sys.path,
        "cwd": os.getcwd(),
        "importable": {name: importable(name) for name in event.get("modules", [])},
    }
