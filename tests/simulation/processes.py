"""Each simulated Lambda environment is a process of its own, as in AWS.

The simulation runs every environment in one Python process, so what `runner.runtime`
keeps per process is kept here per environment: the work abandoned past its timeout and
the leases it holds (one environment's hung thread must not end another's runtime), and
whether the code runs in a Lambda runtime (`AWS_LAMBDA_RUNTIME_API` is set in a
function's environment, not in a producer's or the CLI's shell). Ending the runtime is
the environment's `os._exit`: its invocation fails (`Runtime.ExitError`) and its
threads die with it (tests.simulation.lambdas).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

from runner import runtime
from tests.simulation.fibers import Scheduler, SimExit


class PerProcess:
    """A list of `runner.runtime`'s, one per environment (the calling fiber's)."""

    def __init__(self, key: Callable[[], object]) -> None:
        self._key = key
        self._lists: dict[int, tuple[object, list[Any]]] = {}

    def _list(self) -> list[Any]:
        owner = self._key()
        found = self._lists.get(id(owner))
        if found is None or found[0] is not owner:
            found = self._lists[id(owner)] = (owner, [])
        return found[1]

    def append(self, value: Any) -> None:
        self._list().append(value)

    def clear(self) -> None:
        self._list().clear()

    def __iter__(self) -> Iterator[Any]:
        return iter(list(self._list()))

    def __len__(self) -> int:
        return len(self._list())

    def __bool__(self) -> bool:
        return bool(self._list())

    def __getitem__(self, index: Any) -> Any:
        return self._list()[index]

    def __setitem__(self, index: Any, value: Iterable[Any]) -> None:
        self._list()[index] = value


class Processes:
    """Installs the per-environment view of `runner.runtime` (undone by `close`)."""

    def __init__(self, scheduler: Scheduler, is_lambda: Callable[[object], bool]) -> None:
        self._scheduler = scheduler
        self._saved = {
            name: getattr(runtime, name)
            for name in ("_abandoned", "_held", "in_lambda", "_exit_runtime")
        }
        runtime._abandoned = PerProcess(self._owner)  # type: ignore[assignment]
        runtime._held = PerProcess(self._owner)  # type: ignore[assignment]
        runtime.in_lambda = lambda: is_lambda(self._owner())
        runtime._exit_runtime = self._exit

    def _owner(self) -> object:
        fiber = self._scheduler.current()
        return fiber.env if fiber is not None else None

    @staticmethod
    def _exit() -> None:
        raise SimExit(f"os._exit({runtime.EXIT_STATUS})")

    def close(self) -> None:
        for name, value in self._saved.items():
            setattr(runtime, name, value)
