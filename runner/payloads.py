"""Claim check: a payload too large to keep on the task item lives in the payload bucket,
and the item holds a small reference to it.

Inputs, results and step results whose JSON is over `INLINE_MAX_BYTES`, or that would
not leave the item within DynamoDB's 400 KB (`runner.limits`), are stored as objects
under the task's prefix (`tasks/<digest of id and created_at>/`) and referenced as
`{"$payload": {"bucket", "key", "bytes", "sha256"}}`. The runner's own writes then always
fit; a payload is refused only past `MAX_PAYLOAD_BYTES`.

A producer's input is written first under `staging/`, at a key of that create's own
(a random suffix: two creates of one id in one millisecond never share it), its
metadata naming the task (a lifecycle rule expires what an item never came to
reference: a producer that died between the upload and its insert), then copied to the
task's prefix once the item exists; the reference names both keys. If that copy fails
(S3 throttled, the producer stopped), the sweeper makes it (`runner.staged_inputs`),
and a reader that finds no object there first makes it itself, or, when it may not
(an operator's credentials: only the runner's roles and the producer write under
`tasks/`), reads the staged object. The task's objects are deleted with it: the
stream's REMOVE record (TTL) of an item that had any (`payloads` true) reaches
`routeFailed`, which deletes its prefix (`delete_task`).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runner.errors import InvalidTaskInput, PayloadCorrupt, PayloadUnavailable

if TYPE_CHECKING:  # runner.steps imports this module: task modules load no botocore
    from runner.aws import AwsClients, AwsRetryPolicy
    from runner.config import Settings

# A payload's JSON up to this size stays on the item. On-demand DynamoDB bills a write by
# the whole item (1 write unit per KB, $0.625 per million) and a task's item is written
# at least 3 times (insert, claim, outcome), one more per step; an offloaded payload
# costs an S3 PUT ($5 per million) and a GET per read ($0.40 per million) but two round
# trips more. Cost breaks even at about 3 KB; up to 16 KiB the item's writes cost at most
# about $30 per million tasks more than S3 would, and the task saves the S3 latency
# (README "Large payloads" has the figures).
INLINE_MAX_BYTES = 16 * 1024
# The largest payload (input, result or one step's result) a task may have: a 1 GB
# Lambda handling one measured a peak RSS of about 6x the payload (README "Large
# payloads", bench/payload_memory.py), so 10 MiB leaves room for several at once.
MAX_PAYLOAD_BYTES = 10 * 1024 * 1024
# Offloaded inputs one process runs at once, in bytes; a task past it is handed to the
# retry workflow, where it runs in an invocation of its own (runner.dispatch). A task
# with a 10 MiB input and result peaked at 85 MiB over the process's 55 (bench figure
# 11, ~4x its payloads), and a stream batch runs up to 100 tasks at once in one 1 GB
# function: 64 MiB of inputs (6 at the cap) keeps a batch's payloads within ~600 MiB.
# The first always runs, whatever its size.
PROCESS_INPUT_BUDGET_BYTES = 64 * 1024 * 1024
REFERENCE_KEY = "$payload"
TASKS_PREFIX = "tasks/"
# Producers' uploads before their item exists; the bucket's lifecycle rule expires them.
STAGING_PREFIX = "staging/"
# A staged input's user metadata: the task it is for (its id base64url-encoded: metadata
# is sent as HTTP headers), so the sweeper can find the item that refers to it.
STAGED_ID_METADATA = "task-id"
STAGED_CREATED_METADATA = "task-created-at"
# S3's limit on an object's user-defined metadata (names and values, UTF-8 bytes).
METADATA_MAX_BYTES = 2048


class InputBudget:
    """Bytes of offloaded inputs running in this process (`PROCESS_INPUT_BUDGET_BYTES`)."""

    def __init__(self, limit: int = PROCESS_INPUT_BUDGET_BYTES) -> None:
        self.limit = limit
        self.held = 0
        self._lock = threading.Lock()

    def try_take(self, size: int, *, force: bool = False) -> bool:
        """Take `size` bytes if they fit (always when nothing is held, or `force`: there
        is nowhere else to run it); True if taken."""
        with self._lock:
            if not force and self.held and self.held + size > self.limit:
                return False
            self.held += size
            return True

    def give_back(self, size: int) -> None:
        with self._lock:
            self.held -= size


def reference_bytes(value: Any) -> int:
    """The size a reference stands for (0 for a value kept on the item)."""
    return int(value[REFERENCE_KEY]["bytes"]) if is_reference(value) else 0


def is_reference(value: Any) -> bool:
    """True if `value` is a payload reference (the dashboard and get-task show it as one)."""
    if not isinstance(value, dict) or set(value) != {REFERENCE_KEY}:
        return False
    inner = value[REFERENCE_KEY]
    return (
        isinstance(inner, dict)
        and isinstance(inner.get("bucket"), str)
        and isinstance(inner.get("key"), str)
        and isinstance(inner.get("bytes"), int)
        and isinstance(inner.get("sha256"), str)
    )


def encode(value: Any) -> bytes:
    """A JSON value as the bytes a payload object holds (and whose size is compared)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()


def encoded_size(value: Any) -> int:
    return len(encode(value))


def task_prefix(task_id: str, created_at: str | None) -> str:
    """`tasks/<32 hex>/`: one prefix per task incarnation (an id re-created gets another)."""
    digest = hashlib.sha256(f"{task_id}\0{created_at or ''}".encode()).hexdigest()[:32]
    return f"{TASKS_PREFIX}{digest}/"


def name_digest(name: str) -> str:
    """A step name as a safe, fixed-length piece of an object key."""
    return hashlib.sha256(name.encode()).hexdigest()[:16]


def _staging_key(key: str) -> str:
    return STAGING_PREFIX + key.removeprefix(TASKS_PREFIX)


def staged_key(ref: dict[str, Any]) -> str:
    """The `staging/` key an input reference's object was uploaded to: its `staged`
    (`staging/<digest>/input-<16 hex>.json`, one per create), or for a reference written
    before it had one, the final key's counterpart (`staging/<digest>/input.json`)."""
    inner = ref[REFERENCE_KEY]
    staged = inner.get("staged")
    if isinstance(staged, str) and staged.startswith(STAGING_PREFIX):
        return staged
    return _staging_key(inner["key"])


def staged_metadata(task_id: str, created_at: str) -> dict[str, str]:
    """A staged input's user metadata; InvalidTaskInput if S3 could not hold it."""
    metadata = {
        STAGED_ID_METADATA: base64.urlsafe_b64encode(task_id.encode()).decode(),
        STAGED_CREATED_METADATA: created_at,
    }
    if sum(len(k) + len(v) for k, v in metadata.items()) > METADATA_MAX_BYTES:
        raise InvalidTaskInput(
            "a task id this long (over ~1,500 bytes as UTF-8) with an input past"
            f" {INLINE_MAX_BYTES} bytes as JSON is not supported: use a shorter id"
        )
    return metadata


class PayloadStore:
    """The payload bucket: put, load and delete payload objects; None bucket: disabled."""

    def __init__(
        self,
        settings: Settings,
        clients: AwsClients,
        *,
        retry_policy: AwsRetryPolicy | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        from runner.aws import AwsRetryPolicy

        self.bucket = settings.payload_bucket
        self.clients = clients
        self.retry_policy = retry_policy or AwsRetryPolicy()
        self._sleep = sleep

    @property
    def enabled(self) -> bool:
        return self.bucket is not None

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        """One S3 call with the runner's retries; errors become PayloadUnavailable (its
        code only: S3's text may quote a key) or, for a missing object, PayloadCorrupt."""
        from botocore.exceptions import BotoCoreError, ClientError

        method = getattr(self.clients.s3, operation)
        try:
            response: dict[str, Any] = self.retry_policy.call(method, sleep=self._sleep, **kwargs)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404"):
                raise PayloadCorrupt(f"payload object missing ({operation})") from exc
            raise PayloadUnavailable(f"S3 {operation} failed: {code}") from exc
        except BotoCoreError as exc:
            raise PayloadUnavailable(f"S3 {operation} failed: {type(exc).__name__}") from exc
        return response

    def _reference(self, key: str, body: bytes) -> dict[str, Any]:
        assert self.bucket is not None
        return {
            REFERENCE_KEY: {
                "bucket": self.bucket,
                "key": key,
                "bytes": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }
        }

    def put(
        self, key: str, value: Any, *, metadata: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """Store `value` at `key` (under a task's prefix); its reference."""
        if self.bucket is None:
            raise PayloadUnavailable("no payload bucket is configured (TASK_RUNNER_PAYLOAD_BUCKET)")
        body = encode(value)
        self._call(
            "put_object",
            Bucket=self.bucket,
            Key=key,
            Body=body,
            ContentType="application/json",
            ServerSideEncryption="AES256",
            **({"Metadata": metadata} if metadata else {}),
        )
        return self._reference(key, body)

    def stage_input(self, task_id: str, created_at: str, value: Any) -> dict[str, Any]:
        """A producer's input, uploaded under `staging/` before its item is written (its
        metadata names the task), at a key of this create's own; the reference names the
        key it will have under the task's prefix (`commit_input`) and, as `staged`, that
        upload."""
        metadata = staged_metadata(task_id, created_at)
        final = f"{task_prefix(task_id, created_at)}input.json"
        staged = _staging_key(final).removesuffix(".json") + f"-{secrets.token_hex(8)}.json"
        ref = self.put(staged, value, metadata=metadata)
        ref[REFERENCE_KEY].update(key=final, staged=staged)
        return ref

    def staged(self, before: datetime) -> Iterator[str]:
        """The keys of staged inputs last written before `before` (every page)."""
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": STAGING_PREFIX}
            if token:
                kwargs["ContinuationToken"] = token
            listed = self._call("list_objects_v2", **kwargs)
            for found in listed.get("Contents", []):
                if found["LastModified"] < before:
                    yield str(found["Key"])
            token = listed.get("NextContinuationToken")
            if not token:
                return

    def staged_for(self, key: str) -> tuple[str, str] | None:
        """(task id, created_at) a staged input was uploaded for; None if it is gone or
        does not say (uploaded by a client before the metadata)."""
        try:
            head = self._call("head_object", Bucket=self.bucket, Key=key)
        except PayloadCorrupt:
            return None
        metadata = head.get("Metadata") or {}
        encoded = metadata.get(STAGED_ID_METADATA)
        created_at = metadata.get(STAGED_CREATED_METADATA)
        if not encoded or not created_at:
            return None
        try:
            return base64.urlsafe_b64decode(encoded.encode()).decode(), created_at
        except ValueError:
            return None

    def commit_input(self, ref: dict[str, Any]) -> None:
        """Move a staged input to the key its reference names (the item exists now).
        PayloadCorrupt if there is none to move (moved already, or expired)."""
        inner = ref[REFERENCE_KEY]
        self._call(
            "copy_object",
            Bucket=inner["bucket"],
            Key=inner["key"],
            CopySource={"Bucket": inner["bucket"], "Key": staged_key(ref)},
            ServerSideEncryption="AES256",
        )
        # DELETE requests are free; the lifecycle rule would expire it days later.
        self._call("delete_object", Bucket=inner["bucket"], Key=staged_key(ref))

    def delete_staged(self, ref: dict[str, Any]) -> None:
        """Delete a staged input whose item was refused (nothing refers to it)."""
        inner = ref[REFERENCE_KEY]
        self._call("delete_object", Bucket=inner["bucket"], Key=staged_key(ref))

    def load(self, value: Any) -> Any:
        """The value a reference stands for (anything else as it is)."""
        if not is_reference(value):
            return value
        inner = value[REFERENCE_KEY]
        if self.bucket is None:
            raise PayloadUnavailable(
                "the task has an offloaded payload and no payload bucket is configured: set"
                " TASK_RUNNER_PAYLOAD_BUCKET (the stack's output PayloadBucketName)"
            )
        if inner["bucket"] != self.bucket:
            raise PayloadCorrupt("payload reference names a bucket that is not the runner's")
        try:
            body = self._get(inner["key"])
        except PayloadCorrupt:
            if not inner["key"].endswith("/input.json"):
                raise
            body = self._staged_input(value)
        if len(body) != inner["bytes"] or hashlib.sha256(body).hexdigest() != inner["sha256"]:
            raise PayloadCorrupt("payload object does not match its reference")
        return json.loads(body)

    def _staged_input(self, ref: dict[str, Any]) -> bytes:
        """An input not (yet) under its task's prefix: its producer stopped between the
        insert and the copy. Finish the copy (unless the producer or the sweeper just
        did: then it is there to read); a reader that may not copy (S3 refuses an
        operator's CopyObject: AccessDenied) reads the staged object itself."""
        try:
            self.commit_input(ref)
        except PayloadCorrupt:
            pass  # nothing staged: moved by another just now (or lost: read and see)
        except PayloadUnavailable:
            # Not copied (refused, or S3 failing): the staged object is as good to read;
            # the sweeper moves it. Moved meanwhile by another: then it is at its key.
            with contextlib.suppress(PayloadCorrupt):
                return self._get(staged_key(ref))
        return self._get(ref[REFERENCE_KEY]["key"])

    def load_item(self, values: dict[str, Any]) -> dict[str, Any]:
        """A task item's plain values with every reference (input, result, steps) loaded."""
        if not values.get("payloads"):
            return values
        loaded = {
            **values,
            "data": self.load(values.get("data")),
            "result": self.load(values.get("result")),
        }
        if values.get("result") is None:
            loaded.pop("result")
        steps = values.get("steps")
        if isinstance(steps, dict):
            loaded["steps"] = {
                name: {**record, "result": self.load(record.get("result"))}
                if isinstance(record, dict)
                else record
                for name, record in steps.items()
            }
        return loaded

    def _get(self, key: str) -> bytes:
        response = self._call("get_object", Bucket=self.bucket, Key=key)
        from botocore.exceptions import BotoCoreError

        try:
            body: bytes = response["Body"].read()
        except (BotoCoreError, OSError) as exc:
            raise PayloadUnavailable(f"S3 get_object failed: {type(exc).__name__}") from exc
        return body

    def delete(self, value: Any) -> None:
        """Delete the object a reference names (an upload no item came to reference)."""
        if is_reference(value) and value[REFERENCE_KEY]["bucket"] == self.bucket:
            self._call("delete_object", Bucket=self.bucket, Key=value[REFERENCE_KEY]["key"])

    def delete_task(self, task_id: str, created_at: str | None) -> int:
        """Delete every object of a task incarnation (and its staged input); their count."""
        if self.bucket is None:
            return 0
        prefix = task_prefix(task_id, created_at)
        deleted = 0
        for where in (prefix, _staging_key(prefix)):
            token: str | None = None
            while True:
                kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": where}
                if token:
                    kwargs["ContinuationToken"] = token
                listed = self._call("list_objects_v2", **kwargs)
                keys = [{"Key": o["Key"]} for o in listed.get("Contents", [])]
                if keys:
                    self._call(
                        "delete_objects",
                        Bucket=self.bucket,
                        Delete={"Objects": keys, "Quiet": True},
                    )
                    deleted += len(keys)
                token = listed.get("NextContinuationToken")
                if not token:
                    break
        return deleted
