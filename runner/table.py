"""The tasks table's plumbing: one DynamoDB call, retried by tenacity, its errors
translated into the project's own. `TaskListing` and `TaskStore` build on it."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from runner.aws import AwsClients, AwsRetryPolicy, is_transient
from runner.config import Settings
from runner.errors import StoreError, TaskConflict
from runner.items import Clock, utcnow


class TasksTable:
    """The tasks table, its clients, retry policy and clock."""

    def __init__(
        self,
        settings: Settings,
        clients: AwsClients,
        *,
        retry_policy: AwsRetryPolicy | None = None,
        clock: Clock = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.clients = clients
        self.retry_policy = retry_policy or AwsRetryPolicy()
        self.clock = clock
        self._sleep = sleep

    @property
    def table_name(self) -> str:
        return self.settings.table_name

    def _call(self, operation: str, *, client: Any = None, **kwargs: Any) -> dict[str, Any]:
        """One DynamoDB call with tenacity retries; AWS errors become the project's errors.
        With `client`, one try on that client, no retries."""
        try:
            if client is not None:
                response: dict[str, Any] = getattr(client, operation)(**kwargs)
            else:
                method = getattr(self.clients.dynamodb, operation)
                response = self.retry_policy.call(method, sleep=self._sleep, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "ConditionalCheckFailedException":
                raise TaskConflict("condition failed") from exc
            # Only the code: AWS's message may quote the request's values (task data).
            raise StoreError(
                f"DynamoDB {operation} failed: {code}", transient=is_transient(exc), code=code
            ) from exc
        except BotoCoreError as exc:
            raise StoreError(
                f"DynamoDB {operation} failed: {type(exc).__name__}", transient=True
            ) from exc
        return response
