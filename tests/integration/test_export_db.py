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
