"""A plan at MAX_PLAN_TASKS with every field at its limit, through the local runtime: how big the
largest DynamoDB item, SQS message and event it writes get, and its throughput beside the 1000-task
figure of bench_runtime (short fields), measured in the same run.

- Limit-size plan: 1,000 tasks, 64-character ids, 200-character names, 2,000-character
  descriptions, ~170-character target paths; a tree (task i after task (i-1)//4) whose last task
  also waits for the 50 before it; zero-latency mock tasks, maxConcurrency 20, no webhook.
- Baseline: bench_runtime's 1000-task tree of short fields, same runtime, same settings.
- Throughput: completed tasks ÷ seconds from POST /builds to the terminal event's timestamp
  (planning included), for each build.
- Sizes, seen by botocore hooks on every call of the process (`local.sizes.SizeProbe`): each item a
  put writes (PutItem, BatchWriteItem, TransactWriteItems) as DynamoDB sizes it, and each item an
  update wrote, read back once the build has ended; each SQS message body sent; each event's JSON as
  `json.dumps` writes it. The outbox message of the largest event (the events-table stream record
  the Pipe / local relay puts on the webhook queue, its item in DynamoDB JSON) is built from the
  stored item, since this build has no webhook to relay to.

Targets: items < 100 KB (DynamoDB allows 400 KB), messages < 256 KB (SQS, EventBridge Pipes),
events <= 96 KB.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from bench.bench_runtime import (
    BIG_BUDGET_S,
    QUICK_BIG_BUDGET_S,
    QUICK_BIG_N,
    TERMINAL_EVENTS,
    THROUGHPUT_CONCURRENCY,
    Bench,
    _row,
    now_ms,
    tree_dag,
)

QUICK = False
ITEM_TARGET_KB, MESSAGE_TARGET_KB, EVENT_TARGET_KB = 100, 256, 96
_details: list[str] = []


def _build(b: Bench, tasks: list[dict[str, Any]], prompt: str, budget_s: float) -> tuple[str, float, list[Any], bool]:
    """(build id, seconds from POST to the terminal event, its events, completed with every task)."""
    b.use({"plan": {"tasks": tasks, "chunk_chars": 8192}, "default_task": {"delay_ms": 0}})
    build_id, t0 = b.start_build(THROUGHPUT_CONCURRENCY, prompt)
    finished = b.wait(build_id, budget_s, poll_s=0.5)
    if not finished:
        b.rt.invoke_api("POST", f"/builds/{build_id}/cancel", user="bench")
        b.wait(build_id, 30)
    evs = b.terminal_events(build_id)
    last = evs[-1] if evs else None
    end = last.timestamp if last is not None and last.type in TERMINAL_EVENTS else now_ms()
    done = sum(1 for e in evs if e.type == "task_completed")
    return build_id, (end - t0) / 1000, evs, finished and done == len(tasks)


def _outbox_message_bytes(build_id: str, seq: int) -> int:
    """The stream record the outbox puts on the webhook queue for event `seq`, as the relay writes it."""
    from shared.dal.aws import client
    from shared.logic.services import services

    key = {"buildId": {"S": build_id}, "seq": {"N": str(seq)}}
    item = client("dynamodb").get_item(TableName=services().settings.events_table, Key=key)["Item"]
    record = {
        "eventID": "0" * 32,
        "eventName": "INSERT",
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": "us-east-1",
        "dynamodb": {
            "ApproximateCreationDateTime": time.time(),
            "Keys": key,
            "NewImage": item,
            "SequenceNumber": "1" * 21,
            "SizeBytes": 0,
            "StreamViewType": "NEW_IMAGE",
        },
        "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/stepwise-events/stream/2025-01-01T00:00:00.000",
    }
    return len(json.dumps(record, default=str).encode())


def run(quick: bool = False) -> list[dict[str, Any]]:
    from local.sizes import SizeProbe, limit_plan
    from shared.models.plan import MAX_PLAN_TASKS

    global QUICK
    QUICK = quick
    _details.clear()
    n = QUICK_BIG_N if quick else MAX_PLAN_TASKS
    budget = QUICK_BIG_BUDGET_S if quick else BIG_BUDGET_S
    with Bench() as b:
        _, t_base, _, ok_base = _build(b, tree_dag(n, f"z{n}"), f"size baseline {n}", budget)
        probe = SizeProbe().attach()
        try:
            build_id, t_big, evs, ok_big = _build(b, limit_plan(n, "size"), f"size limit {n}", budget)
        finally:
            probe.detach()
        probe.measure_updates()
        sizes = {e.seq: len(json.dumps(e.model_dump(mode="json"))) for e in evs}
        top_seq = max(sizes, key=sizes.__getitem__)
        top_event = next(e for e in evs if e.seq == top_seq)
        outbox = _outbox_message_bytes(build_id, top_seq)
        dispatch = _dispatch_bytes(build_id)
    done_big = sum(1 for e in evs if e.type == "task_completed")
    rate_big, rate_base = done_big / t_big, (n if ok_base else 0) / t_base
    note = None if ok_big else f"NOT FINISHED: {done_big}/{n} tasks in the {budget:.0f} s budget"
    kb = 1024
    rows = [
        _row(f"limit-size plan ({n} tasks, every field at its limit): tasks/s end to end; baseline the {n}-task "
             "plan of short fields (bench_runtime's)", rate_big, rate_base, None, "tasks/s", note=note, digits=2),
        _row(f"largest DynamoDB item written by the limit-size build ({probe.item.what.split(' item')[0]})",
             probe.item.bytes / kb, None, f"< {ITEM_TARGET_KB}", "KB", met=probe.item.bytes < ITEM_TARGET_KB * kb),
        _row(f"largest SQS message sent by the limit-size build ({probe.message.what})",
             probe.message.bytes / kb, None, f"< {MESSAGE_TARGET_KB}", "KB",
             met=probe.message.bytes < MESSAGE_TARGET_KB * kb),
        _row(f"largest event of the limit-size build ({top_event.type.value}, seq {top_seq})", sizes[top_seq] / kb,
             None, f"<= {EVENT_TARGET_KB}", "KB", met=sizes[top_seq] <= EVENT_TARGET_KB * kb),
        _row("its outbox message (the stream record on the webhook queue, DynamoDB JSON)", outbox / kb, None,
             f"< {MESSAGE_TARGET_KB}", "KB", met=outbox < MESSAGE_TARGET_KB * kb),
    ]
    generated = next((e.data for e in evs if e.type == "plan_generated"), {})
    _details.append(
        f"- Limit-size build: {done_big} tasks in {t_big:.1f} s; baseline ({n} short tasks) {t_base:.1f} s. "
        f"{probe.items_seen:,} DynamoDB items and {probe.messages_seen:,} SQS messages sized; largest item: "
        f"{probe.item.what} ({probe.item.bytes:,} B); the build item's dispatch state at the end: "
        f"{dispatch:,} B. plan_generated carried {len(generated.get('tasks', []))} of "
        f"{generated.get('taskCount')} tasks (tasksOmitted {generated.get('tasksOmitted')})."
    )
    return rows


def _dispatch_bytes(build_id: str) -> int:
    from shared.logic.services import services

    build = services().builds.get(build_id)
    return len((build.dispatch if build else None) or "")


def details() -> str:
    return "\n".join(_details)


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv[1:]):
        print(json.dumps(row))
    print(details())
