"""What the dashboard serves and how: its address, its token, what it may show and do.

The runner's own settings (table, state machine, endpoint, region) come from the
environment as for the CLI, or from a deployed stack's outputs (`--stack NAME`).
"""

from __future__ import annotations

import dataclasses
import os
import secrets
from dataclasses import dataclass, field
from typing import Any

from runner.config import Settings
from runner.errors import ConfigurationError

# A fixed token from outside (a script that must know it before the dashboard starts);
# without it each process draws its own.
TOKEN_ENV = "TASK_RUNNER_DASHBOARD_TOKEN"
# 32 random bytes; a token given from outside must be at least this long in characters.
TOKEN_BYTES = 32
MIN_TOKEN_CHARS = 32
LOOPBACK_HOST = "127.0.0.1"
# What the overview counts: past this many tasks a status shows "≥ N" (a COUNT query costs
# the read units of the items it counts), and counts are reused this long.
DEFAULT_COUNT_CAP = 1000
DEFAULT_COUNT_TTL_SECONDS = 5.0
# How often the pages ask for fresh figures.
TASK_POLL_SECONDS = 1.0
OVERVIEW_POLL_SECONDS = 5.0
DEFAULT_PAGE_SIZE = 25
# The stack's outputs that name what the dashboard reads (infra/resources.yml).
TABLE_OUTPUT = "TasksTableName"
STATE_MACHINE_OUTPUT = "RetryStateMachineArn"
METRICS_NAMESPACE_OUTPUT = "MetricsNamespace"


# Every page is served under /d/<random>/: the session cookie is scoped to that path, so
# a server on another port of this host (cookies ignore ports) never receives it.
PREFIX_BYTES = 16


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def new_prefix() -> str:
    return f"/d/{secrets.token_urlsafe(PREFIX_BYTES)}"


@dataclass(frozen=True)
class DashboardSettings:
    """One dashboard process: where it listens, what it may do, its secret."""

    host: str = LOOPBACK_HOST
    port: int = 0
    read_only: bool = False
    # Hide task data: inputs, results, error messages, progress messages, step results.
    redact_data: bool = False
    token: str = field(default_factory=new_token, repr=False)
    # The path every page is under ("/d/<random>", no trailing slash).
    prefix: str = field(default_factory=new_prefix, repr=False)
    count_cap: int = DEFAULT_COUNT_CAP
    count_ttl_seconds: float = DEFAULT_COUNT_TTL_SECONDS
    task_poll_seconds: float = TASK_POLL_SECONDS
    overview_poll_seconds: float = OVERVIEW_POLL_SECONDS
    page_size: int = DEFAULT_PAGE_SIZE
    # Where the functions' metrics are (the stack's MetricsNamespace output); None: the
    # POWERTOOLS_METRICS_NAMESPACE variable, else runner.metrics' default.
    metrics_namespace: str | None = None

    def __post_init__(self) -> None:
        if len(self.token) < MIN_TOKEN_CHARS:
            raise ConfigurationError(
                f"the dashboard token must be at least {MIN_TOKEN_CHARS} characters"
            )
        if not (
            self.prefix.startswith("/d/")
            and len(self.prefix) > 3
            and all(c.isalnum() or c in "-_" for c in self.prefix[3:])
        ):
            raise ConfigurationError("the dashboard prefix must be /d/ and URL-safe characters")
        if self.count_cap < 1:
            raise ConfigurationError("the count cap must be at least 1")

    @classmethod
    def from_env(cls, env: Any = None, **overrides: Any) -> DashboardSettings:
        env = os.environ if env is None else env
        token = env.get(TOKEN_ENV) or new_token()
        return cls(token=token, **overrides)

    def url(self, path: str = "/") -> str:
        """The address of a page (`path` as the routes name it: "/tasks")."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}{self.prefix}{path}"

    def login_url(self) -> str:
        """The URL to open: the token in it is swapped for a session cookie on the first
        visit."""
        return self.url(f"/?token={self.token}")


def runner_settings(
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    table_name: str | None = None,
    state_machine_arn: str | None = None,
    stack_outputs: dict[str, str] | None = None,
    env: Any = None,
) -> Settings:
    """The environment's settings (as the CLI reads them), overridden by what was given:
    flags first, then the stack's outputs."""
    settings = Settings.from_env(env)
    outputs = stack_outputs or {}
    changes: dict[str, Any] = {}
    if endpoint_url:
        changes["endpoint_url"] = endpoint_url
    if region:
        changes["region"] = region
    table = table_name or outputs.get(TABLE_OUTPUT)
    if table:
        changes["table_name"] = table
    machine = state_machine_arn or outputs.get(STATE_MACHINE_OUTPUT)
    if machine:
        changes["state_machine_arn"] = machine
    return dataclasses.replace(settings, **changes)


def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    """A deployed stack's outputs by key (`task-runner-<stage>`: see serverless.yml)."""
    from botocore.exceptions import ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as exc:
        raise ConfigurationError(f"cannot read stack {stack_name!r}: {exc}") from exc
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    missing = [k for k in (TABLE_OUTPUT, STATE_MACHINE_OUTPUT) if k not in outputs]
    if missing:
        raise ConfigurationError(f"stack {stack_name!r} has no output {', '.join(missing)}")
    return outputs
