"""ParallelizationFactor: up to N batches of one shard in flight at once.

With ParallelizationFactor N, Lambda's poller spreads a shard's records over N
concurrent batches by partition key: records with the same key are delivered in order,
one batch at a time, while batches of other keys go on beside them (Lambda Developer
Guide, "Using Lambda with DynamoDB", parallelization factor). `Lanes` does that for one
shard of the local poller (runner.local.poller): the reader thread `put`s the records
it read, each lane's thread takes up to a batch of its own records and delivers it (with
the mapping's retries, bisection and on-failure destination, as a batch of a factor-1
mapping), and the reader waits while the lanes hold more than `max_queued` records.
"""

from __future__ import annotations

import json
import logging
import threading
import zlib
from collections import deque
from collections.abc import Callable

from runner.local.stream_records import Record, batches

log = logging.getLogger(__name__)


def lane_of(record: Record, count: int) -> int:
    """The lane of a record: by its partition key (the item's key attributes)."""
    keys = record.get("dynamodb", {}).get("Keys", {})
    return zlib.crc32(json.dumps(keys, sort_keys=True).encode()) % count


class Lanes:
    """`count` concurrent batchers of one shard, each delivering its records in order."""

    def __init__(
        self,
        count: int,
        *,
        batch_size: int,
        deliver: Callable[[list[Record]], None],
        name: str,
        max_queued: int,
    ) -> None:
        self.count = count
        self.batch_size = max(1, batch_size)
        self._deliver = deliver
        self._name = name
        self._max_queued = max_queued
        self._queues: list[deque[Record]] = [deque() for _ in range(count)]
        self._busy = [False] * count
        self._cond = threading.Condition()
        self._stopped = False
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for index in range(self.count):
            thread = threading.Thread(
                target=self._run, args=(index,), name=f"{self._name}-lane-{index}", daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)

    def put(self, records: list[Record]) -> None:
        """Queue records on their lanes (in the order read), then wait while the lanes
        hold more than `max_queued` (the reader reads on only as they catch up)."""
        with self._cond:
            for record in records:
                self._queues[lane_of(record, self.count)].append(record)
            self._cond.notify_all()
            while not self._stopped and sum(map(len, self._queues)) > self._max_queued:
                self._cond.wait(0.1)

    @property
    def idle(self) -> bool:
        """Nothing queued and no batch in flight."""
        with self._cond:
            return not any(self._queues) and not any(self._busy)

    def _run(self, index: int) -> None:
        queue = self._queues[index]
        while True:
            with self._cond:
                while not queue and not self._stopped:
                    self._cond.wait()
                if self._stopped:
                    return
                taken = [queue.popleft() for _ in range(min(self.batch_size, len(queue)))]
                self._busy[index] = True
            try:
                for batch in batches(taken, self.batch_size):  # and at most Invoke's 6 MB
                    self._deliver(batch)
            except Exception:
                log.exception("%s lane %d failed to deliver; dropping its batch", self._name, index)
            finally:
                with self._cond:
                    self._busy[index] = False
                    self._cond.notify_all()
