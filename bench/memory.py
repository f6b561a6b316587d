"""6. Memory: peak RSS of the stream handler on a 1,000-record batch, in a fresh
subprocess talking to the moto server over HTTP (so moto's own memory is not counted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid

from bench.common import (
    ROOT,
    Figure,
    child_env,
    clients_for,
    insert_tasks,
    pending_item,
    timed,
)
from runner.local.motoserver import StreamReader, moto_server
from runner.local.motoserver import create_tasks_table as create_table

SECTION = "6. memory"
BATCH = 1000

CHILD = """
import json, resource, sys
import handler
from runner.app import get_app

class Context:
    aws_request_id = "memory"
    def get_remaining_time_in_millis(self):
        return 900000

def status_kib(field):
    with open("/proc/self/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith(field + ":"))

event = json.load(open(sys.argv[1]))
get_app().clients.dynamodb  # what every invocation finds built: clients, registry
# ru_maxrss survives exec: it would report the (larger) parent forked to spawn us. The
# process's own high-water mark is reset instead (Linux >= 4.0) and read from VmHWM.
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status_kib("VmRSS")
response = handler.process_stream(event, Context())
peak = status_kib("VmHWM")
assert response == {"batchItemFailures": []}, response
json.dump({"before_kib": before, "peak_kib": peak, "rss_after_kib": status_kib("VmRSS"),
           "ru_maxrss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss},
          open(sys.argv[2], "w"))
"""


def run(quick: bool) -> list[Figure]:
    with moto_server() as endpoint:
        clients = clients_for(endpoint)
        dynamodb = clients["dynamodb"]
        table = f"bench-memory-{uuid.uuid4().hex[:8]}"
        reader = StreamReader(clients["dynamodbstreams"], create_table(dynamodb, table))
        items = [pending_item(f"m-{n}", "NOOP_TASK", {"note": f"n{n}"}) for n in range(BATCH)]
        insert_tasks(dynamodb, table, items)
        records = reader.inserts()
        assert len(records) == BATCH
        with tempfile.TemporaryDirectory() as tmp:
            event_file, out_file = os.path.join(tmp, "event.json"), os.path.join(tmp, "out.json")
            with open(event_file, "w") as f:
                json.dump({"Records": records}, f)
            env = child_env(AWS_ENDPOINT_URL=endpoint, AWS_DYNAMO_DB_TABLE_NAME=table)
            elapsed, done = timed(
                lambda: subprocess.run(
                    [sys.executable, "-c", CHILD, event_file, out_file],
                    cwd=ROOT,
                    env=env,
                    capture_output=True,
                    text=True,
                    check=False,
                )
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"memory child failed: {done.stderr[-2000:]}\n{done.stdout[-3000:]}"
                )
            with open(out_file) as f:
                result = json.load(f)
        last = dynamodb.get_item(TableName=table, Key={"id": {"S": f"m-{BATCH - 1}"}})["Item"]
        assert last["status"]["S"] == "DONE", last
    before_mib = result["before_kib"] / 1024
    peak_mib = result["peak_kib"] / 1024
    grown = peak_mib - before_mib
    return [
        Figure(
            SECTION,
            f"peak RSS on a {BATCH}-record batch, MiB",
            peak_mib,
            "MiB",
            reference=before_mib,
            reference_name="same process before the batch, MiB",
            note=(
                f"+{grown:.1f} MiB, {grown * 1024 / BATCH:.0f} KiB per record;"
                f" RSS after {result['rss_after_kib'] / 1024:.1f} MiB; child ran {elapsed:.1f} s"
            ),
            details=result,
        )
    ]
