"""EXPORT_DB: the table, page by page, to S3 as gzipped JSON Lines, and an e-mail."""

from __future__ import annotations

import gzip
import json

import pytest
from moto.core import DEFAULT_ACCOUNT_ID
from moto.ses.models import ses_backends

from runner.app import App
from runner.client import TaskRunnerClient
from runner.model import TaskStatus
from tasks import export_db


def test_export_spans_several_scan_pages(app: App, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(export_db, "SCAN_PAGE_SIZE", 7)
    app.clients.s3.create_bucket(Bucket="exports-test")
    app.clients.ses.verify_email_identity(EmailAddress="noreply@example.com")
    client = TaskRunnerClient(app)
    for n in range(30):
        client.create_task("NOOP_TASK", {"note": f"row {n}"})
    export = client.create_task("export-db", {"email": "ops@example.com"})

    outcome = client.run_task(export.id)

    assert outcome.status is TaskStatus.DONE, outcome.error
    result = client.get_task(export.id).result
    assert result["rows"] == 31 and result["pages"] >= 5
    body = app.clients.s3.get_object(Bucket="exports-test", Key=result["key"])["Body"].read()
    rows = [json.loads(line) for line in gzip.decompress(body).splitlines()]
    assert len(rows) == 31 and {r["type"] for r in rows} == {"NOOP_TASK", "EXPORT_DB"}
    sent = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert len(sent) == 1 and sent[0].destinations["ToAddresses"] == ["ops@example.com"]
    assert result["key"] in sent[0].body


def test_export_without_configuration_fails_permanently(app: App) -> None:
    from dataclasses import replace

    bare = App.build(replace(app.settings, export_bucket=None), app.registry, app.clients)
    client = TaskRunnerClient(bare)
    task = client.create_task("export-db", {"email": "ops@example.com"})
    outcome = client.run_task(task.id)
    assert outcome.status is TaskStatus.FAILED and outcome.error
    assert outcome.error.type == "ConfigurationError" and not outcome.error.retryable


def _export_app(app: App, recipients: tuple[str, ...]) -> App:
    from dataclasses import replace

    app.clients.s3.create_bucket(Bucket="exports-test")
    app.clients.ses.verify_email_identity(EmailAddress="noreply@example.com")
    return App.build(replace(app.settings, export_recipients=recipients), app.registry, app.clients)


@pytest.mark.parametrize(
    ("recipients", "address"),
    [((), "ops@example.com"), (("ops@example.com", "@example.org"), "eve@evil.example")],
)
def test_an_export_to_a_recipient_not_allowed_fails_permanently_and_sends_nothing(
    app: App, recipients: tuple[str, ...], address: str
) -> None:
    client = TaskRunnerClient(_export_app(app, recipients))
    task = client.create_task("export-db", {"email": address})

    outcome = client.run_task(task.id)

    assert outcome.status is TaskStatus.FAILED and outcome.error
    assert outcome.error.type == "RecipientNotAllowed" and not outcome.error.retryable
    assert "TASK_RUNNER_EXPORT_RECIPIENTS" in outcome.error.message
    assert address not in outcome.error.message  # an address is data: never stored
    assert ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages == []
    assert app.clients.s3.list_objects_v2(Bucket="exports-test").get("KeyCount") == 0


def test_an_allowed_domain_gets_a_link_whose_stated_validity_is_true(app: App) -> None:
    from urllib.parse import parse_qs, urlparse

    client = TaskRunnerClient(_export_app(app, ("ops@example.com", "@Example.org")))
    task = client.create_task("export-db", {"email": "Team@example.org"})

    assert client.run_task(task.id).status is TaskStatus.DONE

    [mail] = ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages
    assert "valid for up to 1 hour" in mail.body
    assert f"export-link --task-id {task.id}" in mail.body
    url = next(line for line in mail.body.splitlines() if line.startswith("http"))
    assert parse_qs(urlparse(url).query)["X-Amz-Expires"] == [str(export_db.LINK_EXPIRY_SECONDS)]
    assert export_db.LINK_EXPIRY_SECONDS == 3600
