"""AWS clients, built lazily, and the tenacity policy for the runner's own AWS calls.

Nothing here talks to AWS at import time. botocore's own retries are switched off for
these clients so that one layer (tenacity, below) owns retries and their deadline.
"""

from __future__ import annotations

import contextlib
import contextvars
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import botocore.session
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    ReadTimeoutError,
)
from tenacity import (
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    stop_any,
    wait_random_exponential,
)

from runner.config import Settings

T = TypeVar("T")

# Error codes AWS uses for throttling and transient server trouble.
TRANSIENT_ERROR_CODES = frozenset(
    {
        "ProvisionedThroughputExceededException",
        "ThrottlingException",
        "Throttling",
        "RequestLimitExceeded",
        "TooManyRequestsException",
        "InternalServerError",
        "InternalFailure",
        "ServiceUnavailable",
        "TransactionConflictException",
    }
)
# Pool size: one connection per concurrently running task in a full batch.
MAX_POOL_CONNECTIONS = 128

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "aws_call_deadline", default=None
)


def is_transient(exc: BaseException) -> bool:
    """True for throttling, 5xx and connection errors; never for a failed condition."""
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code == "ConditionalCheckFailedException":
            return False
        return code in TRANSIENT_ERROR_CODES or int(status or 0) >= 500
    return isinstance(
        exc,
        EndpointConnectionError | ConnectionClosedError | ReadTimeoutError | ConnectTimeoutError,
    )


@dataclass(frozen=True)
class AwsRetryPolicy:
    """Exponential backoff with full jitter for the runner's own AWS calls."""

    max_attempts: int = 8
    initial_delay: float = 0.05
    max_delay: float = 2.0
    # Used when no deadline is set (CLI, tests); in Lambda the deadline comes first.
    max_elapsed: float = 20.0

    def call(
        self,
        fn: Callable[..., T],
        *args: Any,
        sleep: Callable[[float], None] = time.sleep,
        **kwargs: Any,
    ) -> T:
        """Call fn, retrying transient AWS errors until attempts or the deadline run out."""
        budget = self.max_elapsed
        deadline = _deadline.get()
        if deadline is not None:
            budget = max(0.0, min(budget, deadline - time.monotonic()))
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            wait=wait_random_exponential(multiplier=self.initial_delay, max=self.max_delay),
            stop=stop_any(stop_after_attempt(self.max_attempts), stop_after_delay(budget)),
            sleep=sleep,
            reraise=True,
        )
        return retrying(fn, *args, **kwargs)


@contextlib.contextmanager
def aws_deadline(seconds_from_now: float) -> Iterator[None]:
    """Bound every retried AWS call made inside the block (and its threads' copies)."""
    token = _deadline.set(time.monotonic() + max(0.0, seconds_from_now))
    try:
        yield
    finally:
        _deadline.reset(token)


class AwsClients:
    """botocore clients for one configuration, each created on first use and then shared.

    Plain botocore, not boto3: importing boto3 also imports s3transfer and its resource
    layer (~0.1 s of every cold start) for nothing the runner uses. Clients are
    thread-safe once built; building them is not, hence the lock.
    """

    def __init__(self, settings: Settings, session: botocore.session.Session | None = None) -> None:
        self.settings = settings
        self._session = session
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()

    def client(self, service: str, *, timeout: float | None = None) -> Any:
        """The shared client of `service`; with `timeout`, one whose connect and read
        timeouts are that many seconds (a call that must end soon, whatever happens)."""
        key = service if timeout is None else f"{service}@{timeout}"
        found = self._clients.get(key)
        if found is not None:
            return found
        with self._lock:
            if key not in self._clients:
                if self._session is None:
                    self._session = botocore.session.get_session()
                config = Config(
                    retries={"total_max_attempts": 1, "mode": "standard"},
                    max_pool_connections=MAX_POOL_CONNECTIONS,
                    connect_timeout=5 if timeout is None else timeout,
                    read_timeout=30 if timeout is None else timeout,
                )
                if service == "s3":
                    # Presigned links by SigV4 (X-Amz-Expires, at most 7 days): botocore
                    # would sign them with SigV2 in us-east-1, which S3 is retiring.
                    config = config.merge(Config(signature_version="s3v4"))
                self._clients[key] = self._session.create_client(
                    service,
                    region_name=self.settings.region,
                    endpoint_url=self.settings.endpoint_url,
                    config=config,
                )
            return self._clients[key]

    @property
    def dynamodb(self) -> Any:
        return self.client("dynamodb")

    @property
    def s3(self) -> Any:
        return self.client("s3")

    @property
    def ses(self) -> Any:
        return self.client("ses")

    @property
    def stepfunctions(self) -> Any:
        return self.client("stepfunctions")

    @property
    def sqs(self) -> Any:
        return self.client("sqs")

    @property
    def dynamodbstreams(self) -> Any:
        return self.client("dynamodbstreams")
