"""EXPORT_DB: the tasks table as gzipped JSON Lines in S3, with a link sent by e-mail.

The table is read one Scan page at a time and written through gzip to a temporary file,
so memory stays flat however large the table is; a task's offloaded payloads
(runner.payloads) are read from the payload bucket one at a time and exported in full.
The object key is derived from the task's idempotency key: a retried export overwrites
the same object.

The link is a bearer credential for the whole table, so an export is mailed only to a
recipient `TASK_RUNNER_EXPORT_RECIPIENTS` allows (an address, or `@domain`); with none
allowed, every export fails. A presigned URL stops working when the credentials that
signed it expire, whatever its own expiry says, and a Lambda cannot know when its role's
session ends: the mail promises "up to" the URL's own expiry, and `export-link
--task-id ID` signs a fresh link with the caller's credentials.
"""

from __future__ import annotations

import gzip
import json
import tempfile
from typing import Any

from botocore.exceptions import ClientError
from pydantic import BaseModel, ConfigDict, EmailStr

from runner.config import Settings
from runner.context import TaskContext
from runner.errors import (
    ConfigurationError,
    PayloadCorrupt,
    PermanentTaskError,
    RetryableTaskError,
)
from runner.items import deserialize_image
from runner.payloads import PayloadStore
from runner.registry import TaskDefinition

# Items per Scan page: small enough to bound memory, large enough to be cheap.
SCAN_PAGE_SIZE = 500
# The e-mailed link's own expiry: an upper bound (it also ends with the signing session).
LINK_EXPIRY_SECONDS = 3600
# The longest a presigned link can be valid (SigV4).
MAX_LINK_SECONDS = 7 * 24 * 3600


class RecipientNotAllowed(PermanentTaskError):
    """The export's recipient is not in TASK_RUNNER_EXPORT_RECIPIENTS."""


def recipient_allowed(address: str, allowed: tuple[str, ...]) -> bool:
    """True if `address` is listed, or its domain is (`@example.org`), case-insensitively."""
    address = address.strip().lower()
    domain = "@" + address.rpartition("@")[2]
    return any(entry.lower() in (address, domain) for entry in allowed)


def check_recipient(address: str, settings: Settings) -> None:
    if not settings.export_recipients:
        raise RecipientNotAllowed(
            "exports are refused: TASK_RUNNER_EXPORT_RECIPIENTS allows no recipient"
        )
    if not recipient_allowed(address, settings.export_recipients):
        # Not the address itself: errors are stored and logged, addresses are data.
        raise RecipientNotAllowed(
            "this recipient is not allowed: add it (or its @domain) to "
            "TASK_RUNNER_EXPORT_RECIPIENTS"
        )


def presigned_link(s3: Any, bucket: str, key: str, seconds: int = LINK_EXPIRY_SECONDS) -> str:
    """A GET link for the export, signed with `s3`'s credentials, for at most `seconds`."""
    if not 1 <= seconds <= MAX_LINK_SECONDS:
        raise ValueError(f"a link is valid for 1 to {MAX_LINK_SECONDS} seconds")
    url: str = s3.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": key}, ExpiresIn=seconds
    )
    return url


def _hours(seconds: int) -> str:
    hours = seconds / 3600
    return f"{hours:g} hour" + ("" if hours == 1 else "s")


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
    check_recipient(str(data.email), settings)
    dynamodb, s3, ses = ctx.clients.dynamodb, ctx.clients.s3, ctx.clients.ses
    key = export_key(ctx)
    payloads = PayloadStore(settings, ctx.clients)  # offloaded payloads exported in full
    rows = pages = unreadable = 0
    with tempfile.TemporaryFile() as spool:
        with gzip.GzipFile(fileobj=spool, mode="wb") as gz:
            paginator = dynamodb.get_paginator("scan")
            for page in paginator.paginate(
                TableName=settings.table_name, PaginationConfig={"PageSize": SCAN_PAGE_SIZE}
            ):
                pages += 1
                for item in page.get("Items", []):
                    values = deserialize_image(item)
                    try:
                        values = payloads.load_item(values)
                    except PayloadCorrupt as exc:
                        # Its object is gone or altered (its task removed since this page
                        # was read, or a person deleted it): the row keeps its references
                        # and says why, rather than one task failing every export.
                        # (PayloadUnavailable, S3 failing, fails the attempt: retried.)
                        values = {**values, "payload_unavailable": str(exc)}
                        unreadable += 1
                    gz.write(json.dumps(values, sort_keys=True).encode() + b"\n")
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
    url = presigned_link(s3, settings.export_bucket, key)
    missing = (
        f" {unreadable} of them with a payload that could not be read (see payload_unavailable)."
        if unreadable
        else ""
    )
    body = (
        f"{rows} tasks exported.{missing} Download (valid for up to {_hours(LINK_EXPIRY_SECONDS)}; "
        "it may stop earlier, when the credentials that signed it expire):\n"
        f"{url}\n\nFor a fresh link: task-runner export-link --task-id {ctx.task_id}\n"
    )
    try:
        ses.send_email(
            Source=settings.sender_email,
            Destination={"ToAddresses": [str(data.email)]},
            Message={
                "Subject": {"Data": "Your task table export is ready"},
                "Body": {"Text": {"Data": body}},
            },
        )
    except ClientError as exc:
        # Only the code: SES's message names the addresses it refused.
        code = exc.response.get("Error", {}).get("Code", "unknown")
        raise RetryableTaskError(f"could not send the export e-mail: {code}") from exc
    ctx.logger.info(
        "export written",
        extra={"task_id": ctx.task_id, "rows": rows, "pages": pages, "unreadable": unreadable},
    )
    return {
        "bucket": settings.export_bucket,
        "key": key,
        "rows": rows,
        "pages": pages,
        "unreadable_payloads": unreadable,
    }


TASK = TaskDefinition(
    type="EXPORT_DB",
    input_model=ExportDbInput,
    handler=run,
    description="Export the tasks table to S3 and e-mail a download link.",
    timeout_seconds=600,
)
