"""PlanStreamParser: tasks come out as their objects close, identically for any chunking."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.providers.base import MalformedTask
from shared.providers.streaming import PlanStreamParser, parse_plan_text

# Text that stresses the scanner: JSON punctuation, quotes, backslashes, non-ASCII and astral chars.
_tricky_text = st.text(
    alphabet=st.sampled_from([*'ab {}[]",:\\/\n\t\u00e9\u4e2d\U0001f600\u2028\x01']),
    max_size=30,
)
_scalar = st.one_of(st.none(), st.booleans(), st.integers(-10**6, 10**6), _tricky_text,
                    st.floats(allow_nan=False, allow_infinity=False))
_json_value = st.recursive(
    _scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_tricky_text, inner, max_size=3)),
    max_leaves=8,
)
_task = st.fixed_dictionaries(
    {"id": _tricky_text, "name": _tricky_text,
     "input": st.fixed_dictionaries({"prompt": _tricky_text,
                                     "dependencies": st.lists(_tricky_text, max_size=3)})},
    optional={"extra": _json_value, "priority": st.integers(0, 1000)},
)


def _feed_split(text: str, cuts: list[int]) -> list[Any]:
    parser = PlanStreamParser()
    out: list[Any] = []
    prev = 0
    for cut in sorted(set(cuts)):
        out += parser.feed(text[prev:cut])
        prev = cut
    out += parser.feed(text[prev:])
    return out + parser.close()


@settings(max_examples=300, deadline=None)
@given(
    tasks=st.lists(_task, max_size=6),
    wrapped=st.booleans(),
    ensure_ascii=st.booleans(),
    indent=st.sampled_from([None, 2]),
    prose=st.booleans(),
    data=st.data(),
)
def test_any_chunking_gives_the_same_tasks_as_json_loads(
    tasks: list[dict[str, Any]], wrapped: bool, ensure_ascii: bool, indent: int | None, prose: bool,
    data: st.DataObject,
) -> None:
    doc = json.dumps({"tasks": tasks} if wrapped else tasks, ensure_ascii=ensure_ascii, indent=indent)
    text = f"Here is the plan [v1]:\n```json\n{doc}\n```\nHope this helps {{!}}" if prose else doc
    cuts = data.draw(st.lists(st.integers(0, len(text)), max_size=40))
    expected = json.loads(doc)
    expected = expected["tasks"] if wrapped else expected
    assert _feed_split(text, cuts) == expected


@pytest.mark.parametrize("size", [1, 2, 3, 7, 40])
def test_every_fixed_chunk_size_matches_one_shot(size: int) -> None:
    prompt = 'say "}{" \\u2603 \\\\'
    tasks = [{"id": f"t{i}", "input": {"prompt": prompt, "deps": [[], {}]}} for i in range(5)]
    text = json.dumps({"tasks": tasks})
    parser = PlanStreamParser()
    out: list[Any] = []
    for i in range(0, len(text), size):
        out += parser.feed(text[i:i + size])
    assert out + parser.close() == tasks


def test_tasks_are_emitted_the_moment_their_object_closes() -> None:
    parser = PlanStreamParser()
    assert parser.feed('{"tasks": [{"id": "a", "input": {"x": 1}') == []
    assert parser.feed("}") == [{"id": "a", "input": {"x": 1}}]
    assert parser.feed(', {"id": "b"') == []
    assert parser.feed("}]}") == [{"id": "b"}]
    assert parser.close() == []


def test_prose_and_fences_around_the_document() -> None:
    text = (
        "I'll plan this. Note: use {curly} braces and [brackets] freely.\n"
        '```json\n{"tasks": [{"id": "a"}, {"id": "b"}]}\n```\n'
        'Afterwards, more: [{"id": "not-a-task"}]'
    )
    assert parse_plan_text(text) == [{"id": "a"}, {"id": "b"}]


def test_bare_array_root() -> None:
    assert parse_plan_text('Plan:\n[ {"id": "a"} ,{"id":"b"}]') == [{"id": "a"}, {"id": "b"}]


def test_a_json_object_without_tasks_before_the_plan_is_skipped() -> None:
    text = '{"thinking": "[{\\"id\\": 1}]", "arr": [{"id": "x"}]} then {"tasks": [{"id": "a"}]}'
    assert parse_plan_text(text) == [{"id": "a"}]


def test_only_the_tasks_key_of_the_root_object_holds_tasks() -> None:
    text = '{"meta": [{"id": "m"}], "note": "tasks", "tasks": [{"id": "a", "sub": [{"id": "n"}]}]}'
    assert parse_plan_text(text) == [{"id": "a", "sub": [{"id": "n"}]}]


def test_truncated_last_object_comes_back_malformed_with_its_raw_fragment() -> None:
    items = parse_plan_text('{"tasks": [{"id": "a"}, {"id": "b", "input": {"prompt": "hal')
    assert items[0] == {"id": "a"}
    assert len(items) == 2
    assert isinstance(items[1], MalformedTask)
    assert items[1].raw == '{"id": "b", "input": {"prompt": "hal'
    assert "unterminated" in items[1].error


def test_malformed_object_in_the_middle_does_not_lose_the_others() -> None:
    items = parse_plan_text('[{"id": "a"}, {"id": "b", type: create_file,}, {"id": "c"}]')
    assert items[0] == {"id": "a"}
    assert isinstance(items[1], MalformedTask)
    assert items[1].raw == '{"id": "b", type: create_file,}'
    assert items[1].error.startswith("invalid JSON")
    assert items[2] == {"id": "c"}


def test_inner_container_left_open_is_cut_at_the_tasks_closing_brace() -> None:
    items = parse_plan_text('[{"id": "a", "deps": ["x"}, {"id": "c"}]')
    assert isinstance(items[0], MalformedTask)
    assert items[0].raw == '{"id": "a", "deps": ["x"}'
    assert items[1] == {"id": "c"}


def test_task_cut_off_by_the_array_closing() -> None:
    items = parse_plan_text('{"tasks": [{"id": "a"}, {"id": "b"]}')
    assert items[0] == {"id": "a"}
    assert isinstance(items[1], MalformedTask)
    assert items[1].raw == '{"id": "b"'


def test_stray_closer_between_tasks_is_ignored() -> None:
    assert parse_plan_text('{"tasks": [{"id": "a"}}, {"id": "b"}]}') == [{"id": "a"}, {"id": "b"}]


def test_strings_with_braces_brackets_and_escaped_quotes() -> None:
    task = {"id": "a", "input": {"prompt": 'write "{[}]" and \\"x\\" \\\\', "context": "}]}"}}
    text = json.dumps({"tasks": [task, {"id": "b"}]})
    assert parse_plan_text(text) == [task, {"id": "b"}]


def test_escape_split_exactly_at_the_chunk_boundary() -> None:
    parser = PlanStreamParser()
    out = parser.feed('[{"id": "a\\')  # ends on the backslash of \"
    out += parser.feed('"}", "u": "\\')
    out += parser.feed("u00e9\\ud83d")
    out += parser.feed('\\ude00"}]')
    assert out + parser.close() == [{"id": 'a"}', "u": "\u00e9\U0001f600"}]


def test_raw_newlines_inside_strings_are_tolerated() -> None:
    assert parse_plan_text('[{"id": "a", "description": "line1\nline2"}]') == [
        {"id": "a", "description": "line1\nline2"}
    ]


def test_no_json_at_all_gives_nothing_and_says_so() -> None:
    parser = PlanStreamParser()
    assert parser.feed("I cannot help with that {sorry}.") + parser.close() == []
    assert parser.found_tasks is False


def test_empty_plan_is_recognised() -> None:
    parser = PlanStreamParser()
    assert parser.feed('{"tasks": []}') + parser.close() == []
    assert parser.found_tasks is True


def test_feed_after_close_is_an_error_and_close_is_idempotent() -> None:
    parser = PlanStreamParser()
    parser.feed('[{"id": "a"')
    assert len(parser.close()) == 1
    assert parser.close() == []
    with pytest.raises(ValueError):
        parser.feed("}")
