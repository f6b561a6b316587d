"""A Lambda function as the local Lambda service knows it, and its environment variables.

`environment_variables` builds what an execution environment of the function runs with,
in the order Lambda documents ("Defined runtime environment variables"): the template's
variables, then the stack's overlay (endpoint, dummy credentials, task modules, tracing
off), then Lambda's reserved ones, which nothing may override; a function configuration
that sets a reserved one is refused, as Lambda refuses it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from runner.local.template import ROOT

# The Python runtime the template names, reported in AWS_EXECUTION_ENV.
RUNTIME = "python3.12"
# The Runtime API's address in every Lambda environment (AWS_LAMBDA_RUNTIME_API).
RUNTIME_API = "127.0.0.1:9001"
# Variables Lambda sets itself; a function configuration that sets one is refused.
RESERVED_VARIABLES = (
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
)


@dataclass(frozen=True)
class FunctionConfig:
    """What the local Lambda service knows of a function (read back from the stack)."""

    name: str
    handler: str
    timeout: float
    memory_mb: int = 1024
    reserved_concurrency: int | None = None
    # Without a reserved concurrency: the environments the function may have at once
    # (None: the service's default), e.g. as many as its stream mappings can keep busy.
    unreserved_concurrency: int | None = None
    environment: dict[str, str] = field(default_factory=dict)
    region: str = "us-east-1"
    account: str = "123456789012"

    @property
    def arn(self) -> str:
        return f"arn:aws:lambda:{self.region}:{self.account}:function:{self.name}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "handler": self.handler,
            "timeout": self.timeout,
            "memory_mb": self.memory_mb,
            "reserved_concurrency": self.reserved_concurrency,
            "unreserved_concurrency": self.unreserved_concurrency,
            "environment": dict(self.environment),
            "region": self.region,
            "account": self.account,
        }

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> FunctionConfig:
        concurrency = values.get("reserved_concurrency")
        unreserved = values.get("unreserved_concurrency")
        return cls(
            name=str(values["name"]),
            handler=str(values["handler"]),
            timeout=float(values["timeout"]),
            memory_mb=int(values.get("memory_mb", 1024)),
            reserved_concurrency=None if concurrency is None else int(concurrency),
            unreserved_concurrency=None if unreserved is None else int(unreserved),
            environment={str(k): str(v) for k, v in values.get("environment", {}).items()},
            region=str(values.get("region", "us-east-1")),
            account=str(values.get("account", "123456789012")),
        )


def reserved_in(environment: Mapping[str, str]) -> list[str]:
    """The reserved variables a function's configuration tries to set."""
    return sorted(name for name in environment if name in RESERVED_VARIABLES)


def environment_variables(
    config: FunctionConfig,
    *,
    overlay: Mapping[str, str],
    access_key_id: str,
    environment_id: str,
    task_root: str = str(ROOT),
) -> dict[str, str]:
    """The variables an environment of `config` runs with, in Lambda's documented order:
    the template's, then the stack's overlay (endpoint, dummy credentials, task modules,
    tracing off), then the reserved ones."""
    variables = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
        "PYTHONPATH": os.pathsep.join(p for p in (task_root, overlay.get("PYTHONPATH", "")) if p),
        **config.environment,
        **{k: v for k, v in overlay.items() if k != "PYTHONPATH"},
    }
    stream = time.strftime("%Y/%m/%d", time.gmtime()) + f"/[$LATEST]{environment_id}"
    variables.update(
        {
            "_HANDLER": config.handler,
            "AWS_DEFAULT_REGION": config.region,
            "AWS_REGION": config.region,
            "AWS_EXECUTION_ENV": f"AWS_Lambda_{RUNTIME}",
            "AWS_LAMBDA_FUNCTION_NAME": config.name,
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(config.memory_mb),
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{config.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": stream,
            # Where Lambda's runtime finds the Runtime API (the worker speaks over pipes
            # instead). Set as Lambda sets it: code that ends the runtime when it cannot
            # stop a handler (runner.runtime) knows by it that it runs in Lambda.
            "AWS_LAMBDA_RUNTIME_API": RUNTIME_API,
            "AWS_ACCESS_KEY_ID": access_key_id,
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "LAMBDA_TASK_ROOT": task_root,
            "LAMBDA_RUNTIME_DIR": str(ROOT / "runner" / "local"),
            "TASK_RUNNER_LOCAL_ACCOUNT": config.account,
        }
    )
    return variables
