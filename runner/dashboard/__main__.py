"""`python -m runner.dashboard`: serve the operator dashboard on 127.0.0.1.

It talks to the tasks table and the retry state machine that the environment names (the
variables the CLI reads), or a deployed stack's (`--stack task-runner-prod`), with the
usual AWS credentials; `--endpoint URL` points it at the local stack. It prints the URL
to open, with the process's token in it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any

from runner.dashboard.settings import (
    DEFAULT_COUNT_CAP,
    LOOPBACK_HOST,
    METRICS_NAMESPACE_OUTPUT,
    DashboardSettings,
    runner_settings,
    stack_outputs,
)
from runner.errors import TaskRunnerError

EXIT_FAILED = 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m runner.dashboard", description=__doc__)
    parser.add_argument("--endpoint", metavar="URL", help="AWS endpoint (the local stack's)")
    parser.add_argument("--port", type=int, default=0, help="0 (the default) picks a free one")
    parser.add_argument(
        "--host",
        default=LOOPBACK_HOST,
        help="address to listen on (default %(default)s; anything else sends the token"
        " over the network in clear text: prefer an SSH tunnel)",
    )
    parser.add_argument("--read-only", action="store_true", help="show tasks, change none")
    parser.add_argument(
        "--redact-data",
        action="store_true",
        help="hide task inputs, results, error messages and progress messages",
    )
    parser.add_argument(
        "--stack", metavar="NAME", help="read the table and state machine from its outputs"
    )
    parser.add_argument("--table", help="the tasks table (default: AWS_DYNAMO_DB_TABLE_NAME)")
    parser.add_argument(
        "--state-machine-arn",
        help="the retry state machine (default: TASK_RUNNER_STATE_MACHINE_ARN)",
    )
    parser.add_argument("--region", help="AWS region (default: AWS_REGION)")
    parser.add_argument(
        "--count-cap",
        type=int,
        default=DEFAULT_COUNT_CAP,
        help="count at most this many tasks per status (default %(default)s)",
    )
    return parser


def connect(args: argparse.Namespace) -> tuple[Any, dict[str, str]]:
    """The runner's client for what the arguments and the environment name, checked,
    and the stack's outputs (with --stack)."""
    import botocore.session

    from runner.app import App
    from runner.aws import AwsClients
    from runner.cli_checks import check_configuration
    from runner.cli_setup import load_registry
    from runner.client import TaskRunnerClient

    session = botocore.session.get_session()
    given = {
        "endpoint_url": args.endpoint,
        "region": args.region,
        "table_name": args.table,
        "state_machine_arn": args.state_machine_arn,
    }
    settings = runner_settings(**given)
    clients = AwsClients(settings, session)
    check_configuration(settings, session, clients.dynamodb.meta.endpoint_url)
    outputs: dict[str, str] = {}
    if args.stack:
        outputs = stack_outputs(clients.client("cloudformation"), args.stack)
        settings = runner_settings(**given, stack_outputs=outputs)
        clients = AwsClients(settings, session)
    return TaskRunnerClient(App(settings, clients, load_registry())), outputs


def banner(settings: DashboardSettings, client: Any) -> list[str]:
    runner = client.app.settings
    where = runner.endpoint_url or f"AWS {runner.region}"
    modes = [
        m
        for m, on in (("read-only", settings.read_only), ("data hidden", settings.redact_data))
        if on
    ]
    return [
        f"Dashboard: {settings.login_url()}",
        f"  table {runner.table_name}, state machine {runner.state_machine_arn or '(none)'},"
        f" at {where}" + (f"; {', '.join(modes)}" if modes else ""),
        "  The token in the URL is this process's; whoever has it can read and act on tasks.",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from runner.dashboard.serve import bound_settings, run

    try:
        settings = DashboardSettings.from_env(
            host=args.host,
            port=args.port,
            read_only=args.read_only,
            redact_data=args.redact_data,
            count_cap=args.count_cap,
        )
        client, outputs = connect(args)
        namespace = outputs.get(METRICS_NAMESPACE_OUTPUT)
        if namespace:
            settings = dataclasses.replace(settings, metrics_namespace=namespace)
        settings, sock = bound_settings(settings)
    except TaskRunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    print("\n".join([*banner(settings, client), "Ctrl-C stops it."]), flush=True)
    run(settings, client, sock)
    return 0


if __name__ == "__main__":
    sys.exit(main())
