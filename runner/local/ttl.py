"""DynamoDB's Time to Live, which moto does not run: expired items deleted by the service.

On AWS, an item whose TTL attribute (a Number, epoch seconds) is in the past is deleted
"typically within a few days" and stays readable until then; the deletion reaches the
table's stream as a REMOVE record carrying `userIdentity` {Type: Service, PrincipalId:
dynamodb.amazonaws.com} (a DeleteItem's REMOVE carries none), which Lambda delivers as
`{"type": "Service", "principalId": "dynamodb.amazonaws.com"}`. Items whose TTL value is
more than five years in the past, or not a Number, are never deleted.

`TtlDeleter` does that in the endpoint process for every table whose TTL is enabled, once
an item has been expired for `lag_s` seconds (None: never). The local stack defaults to
a short lag; tests set 0 or None.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)

# AWS ignores TTL values further in the past than this.
IGNORED_AFTER_SECONDS = 5 * 365 * 24 * 3600
TTL_IDENTITY = {"PrincipalId": "dynamodb.amazonaws.com", "Type": "Service"}
# How often expired items are looked for: a quarter of the lag, within these bounds (a
# scan holds moto's DynamoDB lock: about 3 ms per 1,000 items here).
MIN_INTERVAL_SECONDS = 1.0
MAX_INTERVAL_SECONDS = 15.0


def expiry(item: Any, attribute: str) -> float | None:
    """The item's TTL value in epoch seconds, or None if it has none DynamoDB reads."""
    value = item.attrs.get(attribute)
    if value is None or value.type != "N":
        return None
    try:
        return float(value.value)
    except (TypeError, ValueError):
        return None


class TtlDeleter:
    """Deletes expired items of TTL-enabled tables, `lag_s` after they expire."""

    def __init__(
        self,
        lock: Any,
        *,
        lag_s: float | None = None,
        interval_s: float | None = None,
    ) -> None:
        self.lock = lock  # moto's DynamoDB lock (runner.local.motoserver.serialised_dynamodb)
        self.lag_s = lag_s
        self._interval_s = interval_s
        self.deleted = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="ttl", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def interval_s(self) -> float:
        if self._interval_s is not None:
            return self._interval_s
        lag = self.lag_s if self.lag_s is not None else MAX_INTERVAL_SECONDS
        return min(MAX_INTERVAL_SECONDS, max(MIN_INTERVAL_SECONDS, lag / 4))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.run_once()
            except Exception:
                log.exception("TTL deletion failed; continuing")

    def run_once(self, now: float | None = None) -> int:
        """Delete what has been expired for the lag; returns how many items went."""
        lag = self.lag_s
        if lag is None:
            return 0
        from moto.dynamodb.models import dynamodb_backends

        now = time.time() if now is None else now
        deleted = 0
        with self.lock:
            for regions in list(dynamodb_backends.values()):
                for backend in list(regions.values()):
                    for table in list(backend.tables.values()):
                        deleted += self._sweep(table, now, lag)
        self.deleted += deleted
        return deleted

    @staticmethod
    def _sweep(table: Any, now: float, lag: float) -> int:
        ttl = getattr(table, "ttl", {})
        attribute = ttl.get("AttributeName")
        if ttl.get("TimeToLiveStatus") != "ENABLED" or not attribute:
            return 0
        expired = []
        for item in table.all_items():
            at = expiry(item, attribute)
            if at is not None and now - IGNORED_AFTER_SECONDS < at and at + lag <= now:
                expired.append(item)
        for item in expired:
            table.delete_item(item.hash_key, item.range_key)
            shard = table.stream_shard
            if shard is not None and shard.items:
                shard.items[-1].record["userIdentity"] = dict(TTL_IDENTITY)
        if expired:
            log.info("TTL deleted %d expired items from %s", len(expired), table.name)
        return len(expired)
