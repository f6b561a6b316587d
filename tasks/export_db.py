"""EXPORT_DB: the tasks table as gzipped JSON Lines in S3, with a link sent by e-mail.

The table is read one Scan page at a time and written through gzip to a temporary file,
so memory stays flat however large the table is. The object key is derived from the
task's idempotency key: a retried export overwrites the same object.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, EmailStr

from runner.context import TaskContext
from runner.errors import ConfigurationError, RetryableTaskError
from runner.items import deserialize_image
from runner.registry import TaskDefinition

# Items per Scan page: small enough to bound memory, large enough to be cheap.
SCAN_PAGE_SIZE = 500
# How long the e-mailed link works.
LINK_EXPIRY_SECONDS = 24 * 3600


class ExportDbInput(BaseModel):
    # Built on first use: EmailStr imports email_validator (~25 ms of regexes), which
    # every cold start would otherwise pay, though few tasks are exports.
    model_config = ConfigDict(defer_build=True)

    email: EmailStr


def export_key(ctx: TaskContext) -> str:
    return f"exports/{ctx.idempotency_key.replace(':', '-')}.jsonl.gz"


def run(data: ExportDbInput, ctx: TaskContext) -> dict[str, Any]:
    settings = ctx.settings
    if not settings.export_bucket or not settings.sender_email:
        raise ConfigurationError(
            "EXPORT_DB needs TASK_RUNNER_EXPORT_BUCKET and TASK_RUNNER_SENDER_EMAIL"
        )
    dynamodb, s3, ses = ctx.clients.dynamodb, ctx.clients.s3, ctx.clients.ses
    key = export_key(ctx)
    rows = pages = 0
    with tempfile.TemporaryFile() as spool:
        with gzip.GzipFile(fileobj=spool, mode="wb") as gz:
            paginator = dynamodb.get_paginator("scan")
            for page in paginator.paginate(
                TableName=settings.table_name, PaginationConfig={"PageSize": SCAN_PAGE_SIZE}
            ):
                pages += 1
                for item in page.get("Items", []):
                    gz.write(json.dumps(deserialize_image(item), sort_keys=True).encode() + b"\n")
                    rows += 1
        spool.seek(0)
        # s3transfer (multipart for large exports) is imported here, not at cold start.
        from s3transfer.manager import TransferManager

        with TransferManager(s3) as transfer:
            transfer.upload(
                spool,
                settings.export_bucket,
                key,
                extra_args={"ContentType": "application/x-ndjson", "ContentEncoding": "gzip"},
            ).result()
    url = s3.generate_presigned_url(
        "get_object",
        Params={"Bucket": settings.export_bucket, "Key": key},
        ExpiresIn=LINK_EXPIRY_SECONDS,
    )
    try:
        ses.send_email(
            Source=settings.sender_email,
            Destination={"ToAddresses": [str(data.email)]},
            Message={
                "Subject": {"Data": "Your task table export is ready"},
                "Body": {
                    "Text": {"Data": f"{rows} tasks exported. Download (valid 24 h):\n{url}\n"}
                },
            },
        )
    except ClientError as exc:
        raise RetryableTaskError(f"could not send the export e-mail: {exc}") from exc
    ctx.logger.info("export written", extra={"task_id": ctx.task_id, "rows": rows, "pages": pages})
    return {"bucket": settings.export_bucket, "key": key, "rows": rows, "pages": pages}


TASK = TaskDefinition(
    type="EXPORT_DB",
    input_model=ExportDbInput,
    handler=run,
    description="Export the tasks table to S3 and e-mail a download link.",
    timeout_seconds=600,
)
