"""moto in a process of its own (local/aws_process.py): boto3 calls of the runtime's process reach it,
and it never outlives that process, even one that ends without stopping it (killed, crashed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# A runtime's process in miniature: starts the backends, makes AWS calls through boto3, then ends
# abruptly (no stop(): the child's only signal is its stdin closing with this process).
SCRIPT = """
import json, os, sys
from local.aws_process import BackendsProcess
backends = BackendsProcess(lambda name, payload: (b"{}", None))
backends.start()
import boto3
sqs = boto3.client("sqs", region_name="us-east-1")
url = sqs.create_queue(QueueName="q")["QueueUrl"]
sqs.send_message(QueueUrl=url, MessageBody="hello")
got = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1)["Messages"][0]["Body"]
missing = None
try:
    sqs.get_queue_url(QueueName="nope")
except sqs.exceptions.QueueDoesNotExist as exc:
    missing = type(exc).__name__
print(json.dumps({"child": backends.pid, "got": got, "missing": missing}), flush=True)
os._exit(0)
"""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def test_calls_reach_the_backends_process_and_it_ends_with_its_runtime() -> None:
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["got"] == "hello"  # a send, then a long poll answered by the other process
    assert out["missing"] == "QueueDoesNotExist"  # AWS's error answers come back as botocore raises them
    deadline = time.monotonic() + 15
    while _alive(out["child"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(out["child"]), "the backends process outlived the process that started it"
