"""Queue messages: their models keyed on `kind` (shared.models.messages) and their SQS entries
(shared.dal.queues): what SQS accepts and what FIFO deduplication keys on."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from shared.dal.queues import finished_message, task_message
from shared.models.messages import (
    HaltBuild,
    RetryTask,
    TaskFinished,
    TaskMessage,
    message_body,
    parse_dispatch_message,
    parse_task_message,
)

SQS_DEDUP_ID = re.compile(r"[\x21-\x7e]{1,128}")


def _finished(build_id: str, task_id: str, attempt: int, outcome: Any) -> dict:
    body = TaskFinished(buildId=build_id, taskId=task_id, attempt=attempt, outcome=outcome)
    return finished_message(body, f"{task_id}:{attempt}:{outcome}")


def test_finished_message_is_grouped_by_build_and_carries_its_body():
    m = _finished("bld_1", "setup", 1, "completed")
    assert m["MessageGroupId"] == "bld_1"
    assert json.loads(m["MessageBody"])["taskId"] == "setup"
    assert SQS_DEDUP_ID.fullmatch(m["MessageDeduplicationId"])


def test_same_task_in_two_builds_is_not_a_duplicate():
    # a FIFO queue deduplicating queue-wide would otherwise drop the second build's notice
    a = _finished("bld_A", "setup", 1, "completed")["MessageDeduplicationId"]
    b = _finished("bld_B", "setup", 1, "completed")["MessageDeduplicationId"]
    assert a != b


def test_the_same_notice_twice_is_a_duplicate():
    assert (
        _finished("bld_A", "setup", 1, "completed")["MessageDeduplicationId"]
        == _finished("bld_A", "setup", 1, "completed")["MessageDeduplicationId"]
    )


def test_long_or_unusual_task_ids_still_give_distinct_valid_dedup_ids():
    long_id = "t" * 128  # the longest id a plan may use
    ids = {
        _finished("bld_01M8914NMM2CFN1PF6WFMDHRXS", long_id, attempt, outcome)["MessageDeduplicationId"]
        for attempt, outcome in [(3, "failed"), (4, "completed"), (4, "failed")]
    }
    assert len(ids) == 3
    odd = _finished("bld_1", "hero section ✨", 1, "completed")["MessageDeduplicationId"]
    for dedup in [*ids, odd]:
        assert SQS_DEDUP_ID.fullmatch(dedup), dedup


def test_task_message_delay_is_capped_at_the_sqs_maximum():
    assert "DelaySeconds" not in task_message("bld_1", "a", 1)
    assert task_message("bld_1", "a", 2, delay_s=5)["DelaySeconds"] == 5
    assert task_message("bld_1", "a", 9, delay_s=10_000)["DelaySeconds"] == 900
    body = json.loads(task_message("bld_1", "a", 2)["MessageBody"])
    assert body == {"kind": "task", "buildId": "bld_1", "taskId": "a", "attempt": 2}


def test_task_message_carries_its_definition_unless_too_big():
    small = {"id": "a", "name": "A", "input": {"prompt": "write a"}}
    body = json.loads(task_message("bld_1", "a", 1, task=small)["MessageBody"])
    assert body == {"kind": "task", "buildId": "bld_1", "taskId": "a", "attempt": 1, "task": small}
    huge = {"id": "a", "name": "A", "input": {"prompt": "x" * 70_000}}
    body = json.loads(task_message("bld_1", "a", 1, task=huge)["MessageBody"])
    assert body == {"kind": "task", "buildId": "bld_1", "taskId": "a", "attempt": 1}  # the consumer reads it instead


def test_a_body_without_kind_is_what_each_queue_carried_before_kind_was_written() -> None:
    assert parse_task_message('{"buildId":"b","taskId":"t","attempt":2}') == TaskMessage(buildId="b", taskId="t", attempt=2)
    old = parse_dispatch_message('{"buildId":"b","taskId":"t","outcome":"failed"}')
    assert old == TaskFinished(buildId="b", taskId="t", attempt=1, outcome="failed", costUsd=0.0)


def test_an_unknown_kind_is_dropped_and_a_known_kind_missing_a_field_is_refused() -> None:
    assert parse_dispatch_message('{"kind":"reticulate","buildId":"b"}') is None
    with pytest.raises(ValidationError, match="reason"):
        parse_dispatch_message('{"kind":"halt","buildId":"b"}')
    with pytest.raises(ValidationError, match="outcome"):
        parse_dispatch_message('{"kind":"finished","buildId":"b","taskId":"t","outcome":"exploded"}')
    with pytest.raises(ValidationError):
        parse_task_message('{"buildId":"b","attempt":1}')


_ids = st.text(min_size=1, max_size=12)
_messages = st.one_of(
    st.builds(TaskMessage, buildId=_ids, taskId=_ids, attempt=st.integers(1, 10)),
    st.builds(
        TaskFinished,
        buildId=_ids,
        taskId=_ids,
        attempt=st.integers(1, 10),
        outcome=st.sampled_from(["completed", "failed", "cancelled"]),
        costUsd=st.floats(0, 100),
    ),
    st.builds(HaltBuild, buildId=_ids, reason=st.sampled_from(["cancelled", "timed_out", "budget_exceeded"])),
    st.builds(RetryTask, buildId=_ids, taskId=_ids),
)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(_messages)
def test_every_message_reads_back_as_itself_from_its_own_queue(message: Any) -> None:
    body = message_body(message)
    parsed = parse_task_message(body) if isinstance(message, TaskMessage) else parse_dispatch_message(body)
    assert parsed == message and json.loads(body)["kind"] == message.kind
