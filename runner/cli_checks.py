"""What the CLI checks about its configuration before it calls AWS, and how it words the
errors a user can act on: which variable is missing, which table was not found.

A shell with half of `make dev`'s export lines must not send a request to AWS: with no
endpoint the calls would go to amazonaws.com, signed with the local stack's dummy key.
"""

from __future__ import annotations

import re
import socket
from typing import Any
from urllib.parse import urlsplit

from botocore.exceptions import ClientError, EndpointConnectionError

from runner.config import DEFAULT_TABLE_NAME, TABLE_NAME_ENV, Settings
from runner.errors import ConfigurationError, StoreError, UnknownTaskType, WorkflowError

MAKE_DEV_HINT = "`make dev` prints the export lines for the local stack"
# AWS access key ids begin AKIA (long-term) or ASIA (temporary, from STS): see STS
# GetAccessKeyInfo. Any other key is not one AWS would accept.
_AWS_ACCESS_KEY = re.compile(r"^(AKIA|ASIA)[A-Z0-9]{12,124}$")
_AWS_HOSTS = (".amazonaws.com", ".amazonaws.com.cn", ".api.aws")
# How long to wait for a local endpoint to accept a connection.
CONNECT_TIMEOUT_SECONDS = 2.0
# AWS's answers to a request signed with credentials it does not accept.
_REFUSED_CREDENTIALS = frozenset(
    {
        "UnrecognizedClientException",
        "InvalidSignatureException",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "AccessDeniedException",
    }
)


def is_aws(endpoint_url: str) -> bool:
    host = urlsplit(endpoint_url).hostname or ""
    return host.endswith(_AWS_HOSTS)


def check_configuration(settings: Settings, session: Any, endpoint_url: str) -> None:
    """Raise ConfigurationError (one line) unless the calls can go where they should.

    `endpoint_url` is where botocore will send DynamoDB calls, as it resolved it.
    """
    credentials = session.get_credentials()
    if credentials is None:
        raise ConfigurationError(
            "no AWS credentials: export AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            f" (any value works against the local stack; {MAKE_DEV_HINT}),"
            " or use your AWS profile"
        )
    if is_aws(endpoint_url):
        if not _AWS_ACCESS_KEY.match(credentials.access_key or ""):
            raise ConfigurationError(
                "AWS_ENDPOINT_URL is not set, so this would call AWS"
                f" ({endpoint_url}), but the access key is not an AWS one: for the local stack"
                f" export AWS_ENDPOINT_URL ({MAKE_DEV_HINT})"
            )
        return
    parts = urlsplit(endpoint_url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection(
            (parts.hostname or "localhost", port), timeout=CONNECT_TIMEOUT_SECONDS
        ):
            pass
    except OSError:
        raise ConfigurationError(
            f"nothing answers at AWS_ENDPOINT_URL={endpoint_url}: start the local stack"
            f" (`make dev`) or export the endpoint it prints"
        ) from None


def _code(exc: BaseException) -> str:
    cause = exc.__cause__ if not isinstance(exc, ClientError) else exc
    if isinstance(cause, ClientError):
        return str(cause.response.get("Error", {}).get("Code", ""))
    return ""


def explain(exc: Exception, settings: Settings) -> str:
    """One line for an error the CLI met, saying what to do where it can."""
    code = _code(exc)
    where = f"at {settings.endpoint_url}" if settings.endpoint_url else f"in {settings.region}"
    if isinstance(exc, StoreError) and code == "ResourceNotFoundException":
        default = f" (the default: is {TABLE_NAME_ENV} set?)"
        return (
            f"table {settings.table_name!r} not found {where}"
            f"{default if settings.table_name == DEFAULT_TABLE_NAME else ''}:"
            f" set {TABLE_NAME_ENV} to the tasks table's name ({MAKE_DEV_HINT})"
        )
    if code in _REFUSED_CREDENTIALS:
        return f"AWS refused the credentials ({code}): check AWS_PROFILE or AWS_ACCESS_KEY_ID"
    if isinstance(exc, WorkflowError) and code == "StateMachineDoesNotExist":
        return (
            f"state machine not found {where}: check TASK_RUNNER_STATE_MACHINE_ARN"
            f" ({MAKE_DEV_HINT})"
        )
    if isinstance(exc, UnknownTaskType):
        from runner.cli_args import TASK_MODULES_HINT

        return f"{exc}; {TASK_MODULES_HINT}"
    if isinstance(exc.__cause__, EndpointConnectionError):
        return f"cannot reach {where.removeprefix('at ')}: {exc.__cause__}"
    if isinstance(exc, ConfigurationError) and "make dev" not in str(exc):
        return f"{exc} ({MAKE_DEV_HINT})"
    return str(exc)
