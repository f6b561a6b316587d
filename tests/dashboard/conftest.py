"""The dashboard over moto in this process: a table with the demo task types, a state
machine (recorded, not executed: the pages only read executions), and a browser-like
client that keeps cookies."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from runner.app import App
from runner.client import TaskRunnerClient
from runner.dashboard.app import create_app
from runner.dashboard.reads import DashboardReads
from runner.dashboard.security import csrf_token
from runner.dashboard.settings import DashboardSettings
from runner.model import Task
from tests.dashboard.asgi import Browser

TOKEN = "test-token-" + "x" * 32
PORT = 8600
PREFIX = "/d/test-prefix"
PASS_STATE = {"StartAt": "Wait", "States": {"Wait": {"Type": "Pass", "End": True}}}


@dataclass
class Served:
    app: App
    client: TaskRunnerClient
    settings: DashboardSettings
    asgi: Any
    reads: DashboardReads

    def browser(self, *, logged_in: bool = True) -> Browser:
        browser = Browser(self.asgi, prefix=PREFIX)
        if logged_in:
            reply = browser.get(f"/?token={TOKEN}")
            assert reply.status == 303, reply.text
        return browser

    @property
    def csrf(self) -> str:
        return csrf_token(TOKEN)

    def create(self, task_type: str, data: dict[str, Any], task_id: str | None = None) -> Task:
        return self.client.create_task(task_type, data, task_id=task_id)

    def failed(self, task_id: str | None = None) -> Task:
        """A task that ran here (as `run-task` runs one) and failed, retryably."""
        task = self.create("ALWAYS_FAILING_TASK", {"reason": "boom"}, task_id=task_id)
        self.client.run_task(task.id)
        return self.client.get_task(task.id)


def serve(app: App, **options: Any) -> Served:
    settings = DashboardSettings(port=PORT, token=TOKEN, prefix=PREFIX, **options)
    client = TaskRunnerClient(app)
    reads = DashboardReads(app, settings)
    return Served(app, client, settings, create_app(settings, client, reads), reads)


@pytest.fixture
def routed_app(app: App) -> App:
    """`app` with a state machine to start retry executions in."""
    sfn = app.clients.stepfunctions
    arn = sfn.create_state_machine(
        name="retry-test",
        definition=json.dumps(PASS_STATE),
        roleArn="arn:aws:iam::123456789012:role/sfn",
    )["stateMachineArn"]
    settings = dataclasses.replace(app.settings, state_machine_arn=arn)
    return App(settings, app.clients, app.registry)


@pytest.fixture
def served(routed_app: App) -> Iterator[Served]:
    yield serve(routed_app)
