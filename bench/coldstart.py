"""3. Cold start: process start → end of the first process_stream on a one-record batch,
tracing on as in Lambda, against a process that imports boto3 and makes the same two
writes. Each run is a fresh subprocess; the X-Ray emitter sends to a local UDP socket.
Both import precompiled bytecode, as a Lambda does from our package (which ships it).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

from bench.common import (
    ROOT,
    Figure,
    child_env,
    clients_for,
    insert_tasks,
    median,
    pending_item,
)
from runner.local.motoserver import StreamReader, moto_server
from runner.local.motoserver import create_tasks_table as create_table

SECTION = "3. cold start"
TARGET_RATIO = 1.6

# The Lambda: import the handler module, then one invocation with a one-record batch.
HANDLER_CHILD = """
import json, sys, time
import handler

class Context:
    aws_request_id = "cold-start"
    function_name = "processStream"
    def get_remaining_time_in_millis(self):
        return 900000

imported = time.time()
event = json.load(open(sys.argv[1]))
response = handler.process_stream(event, Context())
done = time.time()
assert response == {"batchItemFailures": []}, response
cpu = time.process_time()
json.dump({"imported": imported, "done": done, "cpu": cpu, "modules": len(sys.modules)},
          open(sys.argv[2], "w"))
"""

# The reference: boto3, a DynamoDB client, and the two writes the runner makes (claim, finish).
REFERENCE_CHILD = """
import json, sys, time
import boto3

imported = time.time()
task_id = json.load(open(sys.argv[1]))["task_id"]
client = boto3.client("dynamodb")
key = {"id": {"S": task_id}}
client.update_item(
    TableName=sys.argv[3], Key=key,
    UpdateExpression="SET #s = :processing, claim_token = :token ADD attempts :one",
    ConditionExpression="#s = :pending", ExpressionAttributeNames={"#s": "status"},
    ExpressionAttributeValues={":processing": {"S": "PROCESSING"}, ":pending": {"S": "PENDING"},
                               ":token": {"S": "t"}, ":one": {"N": "1"}},
    ReturnValues="ALL_NEW")
client.update_item(
    TableName=sys.argv[3], Key=key,
    UpdateExpression="SET #s = :done, #r = :result REMOVE claim_token",
    ConditionExpression="#s = :processing AND claim_token = :token",
    ExpressionAttributeNames={"#s": "status", "#r": "result"},
    ExpressionAttributeValues={":processing": {"S": "PROCESSING"}, ":done": {"S": "DONE"},
                               ":token": {"S": "t"}, ":result": {"M": {}}},
    ReturnValues="ALL_NEW")
done = time.time()
cpu = time.process_time()
json.dump({"imported": imported, "done": done, "cpu": cpu, "modules": len(sys.modules)},
          open(sys.argv[2], "w"))
"""


class XRayDaemon:
    """A UDP socket standing in for the X-Ray daemon: collects the segment documents."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self.sock.getsockname()[1]}"
        self.documents: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._receive, daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                continue
            _, _, body = data.decode().partition("\n")
            self.documents.append(json.loads(body))

    def take(self) -> list[dict[str, Any]]:
        time.sleep(0.05)
        taken, self.documents = self.documents, []
        return taken

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def trace_header() -> str:
    root = f"1-{int(time.time()):08x}-{secrets.token_hex(12)}"
    return f"Root={root};Parent={secrets.token_hex(8)};Sampled=1"


def lambda_env(endpoint: str, table: str, daemon: str) -> dict[str, str]:
    """What the Lambda runtime sets (tracing Active), pointed at the local endpoints."""
    return child_env(
        AWS_ENDPOINT_URL=endpoint,
        AWS_DYNAMO_DB_TABLE_NAME=table,
        AWS_LAMBDA_FUNCTION_NAME="task-runner-dev-processStream",
        AWS_LAMBDA_FUNCTION_MEMORY_SIZE="1024",
        LAMBDA_TASK_ROOT=ROOT,
        _X_AMZN_TRACE_ID=trace_header(),
        AWS_XRAY_DAEMON_ADDRESS=daemon,
        AWS_XRAY_CONTEXT_MISSING="LOG_ERROR",
        POWERTOOLS_SERVICE_NAME="task-runner",
        POWERTOOLS_LOG_LEVEL="INFO",
    )


def _spawn(code: str, args: list[str], env: dict[str, str], root: str = ROOT) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        started = time.time()
        done = subprocess.run(
            [sys.executable, "-c", code, args[0], out.name, *args[1:]],
            cwd=root,
            env={**env, "PYTHONPATH": root, "LAMBDA_TASK_ROOT": root},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"cold-start child failed: {done.stderr[-2000:]}")
        result: dict[str, float] = json.load(out)
    result["total"] = result["done"] - started
    result["import"] = result["imported"] - started
    return result


def _subsegment_annotations(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    def walk(doc: dict[str, Any]) -> None:
        if "task_id" in doc.get("annotations", {}):
            found.append(doc["annotations"])
        for sub in doc.get("subsegments", []):
            walk(sub)

    for doc in documents:
        walk(doc)
    return found


def measure_cli_help(repetitions: int) -> tuple[float, float]:
    """`python -m runner.cli --help` against a bare `python -c pass`, medians in seconds."""
    env = child_env(PAGER="cat")

    def once(argv: list[str]) -> float:
        started = time.perf_counter()
        subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, check=True)
        return time.perf_counter() - started

    cli = [once(["-m", "runner.cli", "--help"]) for _ in range(repetitions)]
    bare = [once(["-c", "pass"]) for _ in range(repetitions)]
    return median(cli), median(bare)


def compile_project() -> None:
    """Bytecode for the runner's own modules, as the package ships it for every module
    (infra/compile-bytecode.js); the venv's packages got theirs from pip. Timestamp-checked
    here, unlike the package's, so later edits of the working tree still take effect."""
    import compileall

    for name in ("runner", "tasks"):
        compileall.compile_dir(os.path.join(ROOT, name), quiet=1)
    compileall.compile_file(os.path.join(ROOT, "handler.py"), quiet=1)


def run(quick: bool) -> list[Figure]:
    repetitions = 7 if quick else 11  # the reference alone moves by 15% between runs
    compile_project()
    daemon = XRayDaemon()
    try:
        with moto_server() as endpoint:
            clients = clients_for(endpoint)
            dynamodb = clients["dynamodb"]
            table = f"bench-cold-{uuid.uuid4().hex[:8]}"
            reader = StreamReader(clients["dynamodbstreams"], create_table(dynamodb, table))
            handler_runs: list[dict[str, float]] = []
            reference_runs: list[dict[str, float]] = []
            annotations: list[dict[str, Any]] = []
            with tempfile.TemporaryDirectory() as tmp:
                for n in range(repetitions):  # interleaved: drift hits both alike
                    ids = [f"cold-{n}-{uuid.uuid4().hex[:6]}", f"ref-{n}-{uuid.uuid4().hex[:6]}"]
                    insert_tasks(dynamodb, table, [pending_item(i, "NOOP_TASK", {}) for i in ids])
                    record = next(
                        r for r in reader.inserts() if r["dynamodb"]["Keys"]["id"]["S"] == ids[0]
                    )
                    event_file = os.path.join(tmp, f"event-{n}.json")
                    with open(event_file, "w") as f:
                        json.dump({"Records": [record], "task_id": ids[1]}, f)
                    env = lambda_env(endpoint, table, daemon.address)
                    handler_runs.append(_spawn(HANDLER_CHILD, [event_file], env))
                    found = _subsegment_annotations(daemon.take())
                    if not found:
                        raise RuntimeError("tracing on, but no annotated task subsegment arrived")
                    annotations += found
                    reference_runs.append(_spawn(REFERENCE_CHILD, [event_file, table], env))
                    item = dynamodb.get_item(TableName=table, Key={"id": {"S": ids[0]}})["Item"]
                    assert item["status"]["S"] == "DONE", item
    finally:
        daemon.close()
    cli, bare = measure_cli_help(repetitions)
    ours = median([r["total"] for r in handler_runs])
    ref = median([r["total"] for r in reference_runs])
    cpu_ratio = median([r["cpu"] for r in handler_runs]) / median(
        [r["cpu"] for r in reference_runs]
    )
    return [
        Figure(
            SECTION,
            "first process_stream, tracing on / boto3 + 2 writes",
            ours / ref,
            "x",
            reference=ref,
            reference_name="boto3 + client + 2 writes, s",
            target=f"<= {TARGET_RATIO}",
            passed=ours / ref <= TARGET_RATIO,
            note=(
                f"median of {repetitions} fresh processes each; handler {ours:.3f} s;"
                f" CPU-time ratio {cpu_ratio:.2f}"
            ),
            details={
                "handler_total_s": [r["total"] for r in handler_runs],
                "handler_import_s": [r["import"] for r in handler_runs],
                "handler_cpu_s": [r["cpu"] for r in handler_runs],
                "handler_modules": handler_runs[-1]["modules"],
                "reference_total_s": [r["total"] for r in reference_runs],
                "reference_import_s": [r["import"] for r in reference_runs],
                "reference_cpu_s": [r["cpu"] for r in reference_runs],
                "reference_modules": reference_runs[-1]["modules"],
                "cpu_time_ratio": cpu_ratio,
                "subsegment_annotations": annotations[-1],
            },
        ),
        Figure(
            SECTION,
            "import handler, s (part of the above)",
            median([r["import"] for r in handler_runs]),
            "s",
            reference=median([r["import"] for r in reference_runs]),
            reference_name="import boto3, s",
        ),
        Figure(
            SECTION,
            "python -m runner.cli --help, s",
            cli,
            "s",
            reference=bare,
            reference_name="python -c pass, s",
            note=f"ratio {cli / bare:.1f}",
        ),
    ]
