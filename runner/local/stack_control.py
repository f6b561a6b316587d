"""The running stack's chaos faults and counters, and its control endpoint.

Faults live in two processes: the endpoint process injects the DynamoDB, Step Functions
and Lambda ones, the stack's process (its stream pollers) the `stream` ones. This sets
both from one spec, merges their counts, and serves them on the loopback control
endpoint (runner.local.control), so a test or a user can turn a fault on, act, and turn
it off while the stack runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from runner.local.chaos import FaultPlan, parse_faults
from runner.local.control import ControlServer
from runner.local.endpoint import EndpointProcess
from runner.local.poller import StreamPoller


class StackControl:
    """Sets faults in both processes and answers the control endpoint."""

    def __init__(
        self,
        server: EndpointProcess,
        faults: FaultPlan,
        pollers: Sequence[StreamPoller],
        *,
        port: int = 0,
    ) -> None:
        self.server = server
        self.faults = faults
        self.pollers = pollers  # filled in as the stack starts them
        self.http = ControlServer(self.routes(), port=port)
        self.http.start()

    @property
    def url(self) -> str:
        return self.http.url

    def stop(self) -> None:
        self.http.stop()

    def set_faults(self, spec: str, seed: int | None = None) -> dict[str, Any]:
        """Make `spec` the active faults in both processes; raises FaultSpecError (and
        then changes nothing)."""
        faults = parse_faults(spec)
        self.server.faults(spec, seed)
        self.faults.replace(faults, seed)
        return self.fault_state()

    def fault_state(self) -> dict[str, Any]:
        """The active faults, the seed, and how often each fault fired (both processes)."""
        endpoint = self.server.faults()
        mine = self.faults.snapshot()
        return {
            "faults": endpoint["faults"] + mine["faults"],
            "spent": endpoint.get("spent", []) + mine["spent"],
            "seed": endpoint["seed"],
            "injected": {**endpoint["injected"], **mine["injected"]},
        }

    def routes(self) -> dict[tuple[str, str], Callable[[Any], tuple[int, Any]]]:
        def put_faults(body: Any) -> tuple[int, Any]:
            if not isinstance(body, dict) or not isinstance(body.get("faults", ""), str):
                raise ValueError('expected {"faults": "SPEC", "seed": N} or a plain-text SPEC')
            seed = body.get("seed", self.faults.seed)
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise ValueError(f"the seed must be an integer, not {seed!r}")
            return 200, self.set_faults(body.get("faults", ""), seed)

        return {
            ("GET", "/faults"): lambda body: (200, self.fault_state()),
            ("PUT", "/faults"): put_faults,
            ("DELETE", "/faults"): lambda body: (200, self.set_faults("", self.faults.seed)),
            ("GET", "/lambda"): lambda body: (200, self.server.lambda_stats()),
            ("GET", "/stream"): lambda body: (
                200,
                {p.mapping.function_name: vars(p.stats) for p in self.pollers},
            ),
        }
