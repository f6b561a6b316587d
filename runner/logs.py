"""Structured JSON logging (Powertools Logger), configured once."""

from __future__ import annotations

import functools
import os

from aws_lambda_powertools import Logger

SERVICE_NAME = "task-runner"


@functools.cache
def get_logger() -> Logger:
    """The service's JSON logger; never logs a task's input data on its own."""
    return Logger(service=os.environ.get("POWERTOOLS_SERVICE_NAME", SERVICE_NAME))
