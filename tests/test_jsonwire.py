"""The bounded JSON parser that faces peers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.jsonwire import TooDeep, depth, loads


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_documents_within_the_bound_parse_as_json_does() -> None:
    text = '{"a": [1, {"b": "[[[[{{{{"}], "c": "\\"]"}'
    assert loads(text) == json.loads(text)
    assert loads(nested(32)) == json.loads(nested(32))


def test_a_document_deeper_than_the_bound_is_refused_before_parsing() -> None:
    with pytest.raises(TooDeep):
        loads(nested(33))
    with pytest.raises(TooDeep):
        loads(nested(100_000))  # json.loads would raise RecursionError here


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"text": "[" * 1000 + "{" * 1000})
    assert depth(text.encode()) == 1
    assert loads(text)["text"].startswith("[[[")


def test_malformed_input_is_a_value_error() -> None:
    for raw in (b"[[[", b"\xff\xfe", b'{"a": }'):
        with pytest.raises(ValueError):
            loads(raw)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=20,
)


def measured(value: object) -> int:
    if isinstance(value, list):
        return 1 + max((measured(item) for item in value), default=0)
    if isinstance(value, dict):
        return 1 + max((measured(item) for item in value.values()), default=0)
    return 0


@given(json_values)
def test_depth_is_the_nesting_of_the_document(value: object) -> None:
    assert depth(json.dumps(value).encode()) == measured(value)


def test_a_scalar_string_with_a_bracket_has_no_depth() -> None:
    assert depth(b'"["') == 0
