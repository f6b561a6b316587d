"""Structured JSON logging (Powertools Logger), configured once."""

from __future__ import annotations

import functools
import logging
import os
from typing import IO

from aws_lambda_powertools import Logger

SERVICE_NAME = "task-runner"
# Where log lines go. None is stdout, which Lambda sends to CloudWatch; the CLI keeps
# stdout for its JSON output and logs on stderr (`log_to`).
_stream: IO[str] | None = None


@functools.cache
def get_logger() -> Logger:
    """The service's JSON logger; never logs a task's input data on its own."""
    return Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE_NAME), stream=_stream)


def log_to(stream: IO[str]) -> None:
    """Send the service's log lines to `stream` from now on (the CLI: stderr)."""
    global _stream
    _stream = stream
    if get_logger.cache_info().currsize:
        handler = get_logger().registered_handler
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(stream)
