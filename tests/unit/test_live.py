"""The live protocol without I/O: client frames, the frame size limit, and per-subscription order."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import InvalidInput
from shared.live import FrameTooLarge, Sequencer, encode_frame, event_frame
from shared.models.events import Event, EventType
from shared.models.live import MAX_FRAME_BYTES, Ping, Subscribe, Unsubscribe, parse_client_message


def _event(seq: int, payload: str = "") -> Event:
    return Event(
        id=f"evt_{seq:026d}",
        type=EventType.task_started,
        buildId="bld_x",
        seq=seq,
        timestamp=1_700_000_000_000 + seq,
        data={"taskId": "t", "taskName": "T", "description": payload, "attempt": 1},
    )


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    last=st.integers(min_value=0, max_value=40),
    after=st.integers(min_value=0, max_value=45),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_sequencer_hands_out_each_event_once_in_order_whatever_the_interleaving(
    last: int, after: int, seed: int
) -> None:
    """Replayed pages and live events overlap and arrive shuffled, duplicated, in pieces: what comes
    out is exactly after+1 .. last, in order, once."""
    rng = random.Random(seed)
    pool = [_event(s) for s in range(1, last + 1)]
    arrivals = pool + [rng.choice(pool) for _ in range(len(pool) // 2)] if pool else []
    rng.shuffle(arrivals)
    order = Sequencer(after)
    out: list[int] = []
    while arrivals:
        cut = rng.randint(1, len(arrivals))
        batch, arrivals = arrivals[:cut], arrivals[cut:]
        ready = [e.seq for e in order.offer(batch)]
        start = (out[-1] if out else after) + 1
        assert ready == list(range(start, start + len(ready)))
        out += ready
    assert out == list(range(after + 1, last + 1))
    assert not order.waiting
    assert order.delivered == max(after, last)


def test_sequencer_holds_an_event_beyond_a_gap_until_the_gap_is_filled() -> None:
    order = Sequencer(2)
    assert order.offer([_event(5), _event(4)]) == []
    assert order.waiting
    assert [e.seq for e in order.offer([_event(3)])] == [3, 4, 5]
    assert order.offer([_event(4)]) == [] and not order.waiting


def test_client_frames_parse_and_bad_ones_name_the_field() -> None:
    assert parse_client_message('{"action":"ping"}') == Ping(action="ping")
    assert parse_client_message('{"action":"subscribe","buildId":"bld_1"}') == Subscribe(
        action="subscribe", buildId="bld_1", after=0
    )
    assert isinstance(parse_client_message('{"action":"unsubscribe","buildId":"b"}'), Unsubscribe)
    for text, field in [
        ("[]", "frame"),
        ("nope", "frame"),
        ('{"action":"subscribe"}', "buildId"),
        ('{"action":"subscribe","buildId":"b","after":"x"}', "after"),
        ('{"action":"subscribe","buildId":"b","after":-1}', "after"),
        ('{"buildId":"b"}', "action"),
        ('{"action":"shout"}', "action"),
        ('{"action":"ping","pad":"' + "x" * 40_000 + '"}', "frame"),
    ]:
        with pytest.raises(InvalidInput) as caught:
            parse_client_message(text)
        assert [d["field"] for d in caught.value.details] == [field], text


def test_frames_over_the_api_gateway_limit_are_refused_not_sent() -> None:
    assert len(encode_frame({"x": "a" * (MAX_FRAME_BYTES - 100)}).encode()) <= MAX_FRAME_BYTES
    with pytest.raises(FrameTooLarge):
        encode_frame({"x": "a" * MAX_FRAME_BYTES})
    with pytest.raises(FrameTooLarge):  # the limit counts bytes, not characters
        encode_frame({"x": "é" * (MAX_FRAME_BYTES // 2)})


def test_an_oversized_event_becomes_a_too_large_error_and_an_error_log(monkeypatch: pytest.MonkeyPatch) -> None:
    from shared.observability import logger

    logged: list[str] = []
    monkeypatch.setattr(logger, "error", lambda msg, **_kw: logged.append(msg))
    small = json.loads(event_frame(_event(3)))
    assert small == _event(3).model_dump(mode="json")
    big = json.loads(event_frame(_event(4, payload="x" * MAX_FRAME_BYTES)))
    assert big["type"] == "error" and big["code"] == "too_large"
    assert (big["buildId"], big["seq"]) == ("bld_x", 4)
    assert logged == ["live event too large to push"]
