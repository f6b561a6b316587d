"""`python -m runner.local serve|demo`: the whole service on this machine, no AWS account.

- `serve` (`make dev`): start the local stack and keep it running until Ctrl-C; prints
  the endpoint, the `export ...` lines for another terminal, the chaos control endpoint
  (`--faults SPEC` turns faults on from the start; see runner.local.chaos) and the
  operator dashboard's URL (runner.dashboard; `--no-dashboard` leaves it out).
- `demo` (`make demo`): start it, submit a mix of tasks, show them settle, summarise.

Both register the task modules named in TASK_RUNNER_TASK_MODULES beside the demo tasks.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType

from runner.local.chaos import FaultSpecError, describe_kinds
from runner.local.endpoint import EndpointError
from runner.local.parent_watch import watch_parent
from runner.local.server import DEFAULT_STAGE, DEFAULT_TTL_LAG_SECONDS, LocalStack
from runner.local.stack_env import TaskModulesError
from runner.local.template import ROOT


def _ttl_lag(text: str) -> float | None:
    if text.strip().lower() == "never":
        return None
    try:
        lag = float(text)
    except ValueError:
        lag = -1.0
    if lag < 0:
        raise argparse.ArgumentTypeError(f"expected seconds (>= 0) or 'never', not {text!r}")
    return lag


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runner.local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run the local stack until Ctrl-C")
    demo = commands.add_parser("demo", help="run the demo and exit (non-zero on a surprise)")
    for command in (serve, demo):
        command.add_argument("--port", type=int, default=0, help="0 picks a free port")
        command.add_argument("--stage", default=DEFAULT_STAGE)
    serve.add_argument(
        "--sweep-interval",
        type=float,
        default=None,
        help="seconds between sweeps (default: the template's schedule)",
    )
    serve.add_argument(
        "--service-dir",
        type=Path,
        default=ROOT,
        help="the directory holding serverless.yml (default: this repository)",
    )
    serve.add_argument(
        "--log-level", default=None, help="POWERTOOLS_LOG_LEVEL for the handlers (INFO, ...)"
    )
    serve.add_argument(
        "--faults",
        default="",
        metavar="SPEC",
        help="chaos faults active from the start, e.g. dynamodb.throttle=0.2 (see the README)",
    )
    serve.add_argument(
        "--faults-seed", type=int, default=None, help="seed of the faults' random draws"
    )
    serve.add_argument(
        "--ttl-lag",
        type=_ttl_lag,
        default=DEFAULT_TTL_LAG_SECONDS,
        metavar="SECONDS|never",
        help="delete items this long after their expires_at passed (default %(default)s)",
    )
    serve.add_argument(
        "--control-port", type=int, default=0, help="port of the chaos control endpoint"
    )
    serve.add_argument(
        "--dashboard-port", type=int, default=0, help="port of the dashboard (0: a free one)"
    )
    serve.add_argument(
        "--no-dashboard", action="store_true", help="do not start the operator dashboard"
    )
    serve.add_argument(
        "--exit-with-parent",
        action="store_true",
        help="stop when the parent process exits, even killed outright (make dev)",
    )
    return parser


def chaos_lines(stack: LocalStack) -> list[str]:
    """What `serve` prints about chaos: the control endpoint, what is active, the kinds."""
    state = stack.fault_state()
    active = ", ".join(state["faults"]) or "none"
    seed = f" (seed {state['seed']})" if state["seed"] is not None else ""
    assert stack.control is not None
    return [
        f"Chaos control: {stack.control.url}/faults  (faults active: {active}{seed})",
        f"  change them while it runs: curl -X PUT -d 'dynamodb.throttle=0.2' "
        f"{stack.control.url}/faults",
        "  fault kinds (RATE 0-1, xLIMIT = at most that many times):",
        *[f"    {line}" for line in describe_kinds()],
    ]


def serve(
    port: int,
    stage: str,
    sweep_interval: float | None,
    log_level: str | None,
    service_dir: Path = ROOT,
    *,
    faults: str = "",
    faults_seed: int | None = None,
    ttl_lag: float | None = DEFAULT_TTL_LAG_SECONDS,
    control_port: int = 0,
    dashboard_port: int | None = 0,
    exit_with_parent: bool = False,
) -> int:
    """Run the stack until a signal; `dashboard_port=None` starts no dashboard."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    # SIGHUP too: a closed terminal stops the stack (and its endpoint process) cleanly.
    stopping = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {s: signal.signal(s, on_signal) for s in stopping}
    if exit_with_parent:
        watch_parent(stop.set)
    try:
        with (
            LocalStack.start(
                port=port,
                stage=stage,
                sweep_interval=sweep_interval,
                log_level=log_level,
                service_dir=service_dir,
                faults=faults,
                faults_seed=faults_seed,
                ttl_lag=ttl_lag,
                control_port=control_port,
                verbose=True,
            ) as stack,
            _dashboard(dashboard_port) as dashboard_lines,
        ):
            sweeps = ", ".join(f"{s.function_name} every {s.interval:g} s" for s in stack.schedules)
            python, aws = _typed(sys.executable, "python"), _typed(sys.executable, "aws")
            lines = [
                f"Local stack ready in {stack.started_in:.1f} s: {stack.endpoint_url}",
                f"  table {stack.table_name}, state machine {stack.state_machine_arn}",
                f"  {len(stack.pollers)} stream pollers; {sweeps or 'no schedules'}",
                f"  Lambda: {len(stack.functions)} functions, each in worker processes of"
                " its own; TTL deletes expired items"
                + (f" {ttl_lag:g} s after expiry" if ttl_lag is not None else ": never"),
                *chaos_lines(stack),
                *dashboard_lines,
                "In another terminal:",
                *[f"  {line}" for line in stack.exports()],
                "Then e.g.:",
                f"  {python} -m runner.cli create-task example-task --message hello",
                f"  {aws} --endpoint-url {stack.endpoint_url} stepfunctions list-executions "
                f"--state-machine-arn {stack.state_machine_arn}",
                "Ctrl-C stops it. The data is in memory: a restart begins with an empty table.",
            ]
            print("\n".join(lines), flush=True)
            stop.wait()
            print("stopping...", flush=True)
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    print("stopped", flush=True)
    return 0


@contextlib.contextmanager
def _dashboard(port: int | None) -> Iterator[list[str]]:
    if port is None:
        yield []
        return
    from runner.local.dashboard import dashboard

    with dashboard(port) as lines:
        yield lines


def _typed(executable: str, tool: str) -> str:
    """How to type this environment's `tool` (`.venv/bin/aws`), so the printed lines work
    in a shell whose PATH lacks the virtualenv."""
    path = Path(executable) if tool == "python" else Path(executable).parent / tool
    if not path.exists():
        return tool
    absolute = os.path.abspath(path)
    return os.path.relpath(absolute) if absolute.startswith(os.getcwd() + os.sep) else absolute


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("runner.local").setLevel(logging.INFO)
    try:
        if args.command == "serve":
            return serve(
                args.port,
                args.stage,
                args.sweep_interval,
                args.log_level,
                args.service_dir,
                faults=args.faults,
                faults_seed=args.faults_seed,
                ttl_lag=args.ttl_lag,
                control_port=args.control_port,
                dashboard_port=None if args.no_dashboard else args.dashboard_port,
                exit_with_parent=args.exit_with_parent,
            )
        from runner.local.demo import run_demo

        return run_demo(port=args.port, stage=args.stage)
    except (FaultSpecError, TaskModulesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except EndpointError as exc:
        hint = " (another `make dev`? `make dev DEV_PORT=N` picks another port)"
        print(f"error: {exc}{hint if 'in use' in str(exc) else ''}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
