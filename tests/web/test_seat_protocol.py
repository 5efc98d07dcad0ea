"""The seat protocol's pure parts: decoding, excerpts, edit errors; the waiting room's rule."""

from __future__ import annotations

import json
import unicodedata
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from gateway.errors import FieldError, InvalidRequest
from gateway.ticket import Ticket, apply_edits, utcnow
from gateway.web import seat_protocol as proto
from gateway.web.seats import PendingLimits, WaitingRoom, displaced_by_newcomer


def test_controls_are_escaped_and_plain_text_is_kept() -> None:
    assert proto.escape_controls("幸福路12号　路灯不亮") == "幸福路12号　路灯不亮"  # ideographic space kept
    assert proto.escape_controls("\x1b[2J\x07\x00\x7f\x85") == "\\x1b[2J\\x07\\x00\\x7f\\x85"
    assert proto.escape_controls("a\u202eb\u2066c\u200bd\u2028e") == "a\\u202eb\\u2066c\\u200bd\\u2028e"
    assert proto.escape_controls("\U000e0041") == "\\U000e0041"  # a tag character
    assert proto.escape_controls("👨\u200d👩") == "👨\u200d👩"  # the joiner of an emoji sequence stays
    assert proto.escape_controls("one\ntwo\r", keep="\n") == "one\ntwo\\x0d"


@given(st.text())
def test_escaped_text_holds_no_control_or_bidi_character(text: str) -> None:
    escaped = proto.escape_controls(text)
    # What is left is printable, a space separator (U+3000 in Chinese text), a private-use glyph or
    # the emoji joiner.
    assert all(ch.isprintable() or unicodedata.category(ch) in ("Zs", "Co") or ch == "\u200d" for ch in escaped)
    assert not any(0x202A <= ord(ch) <= 0x202E or 0x2066 <= ord(ch) <= 0x2069 for ch in escaped)


def test_an_excerpt_is_short_and_escaped() -> None:
    assert proto.excerpt("dance") == "dance"
    long = proto.excerpt("\x1b" + "x" * 60_000)
    assert long == "\\x1b" + "x" * (proto.EXCERPT_CHARS - 1) + "…"


def test_decode_refuses_deep_nesting_and_non_objects() -> None:
    with pytest.raises(proto.BadJson, match="deeper"):
        proto.decode("[" * 1000 + "]" * 1000)
    with pytest.raises(proto.BadJson, match="not valid JSON"):
        proto.decode(b"\xff{")
    with pytest.raises(proto.BadJson, match="JSON object"):
        proto.decode("[1]")
    assert proto.decode('{"type": "ping", "id": 3}') == {"type": "ping", "id": 3}


def test_an_unknown_type_is_named_by_an_excerpt_only() -> None:
    with pytest.raises(proto.UnknownFrame) as caught:
        proto.frame_of({"type": "\u202e" + "y" * 10_000})
    assert caught.value.message.startswith("unknown frame type '\\u202eyyy") and len(caught.value.message) < 200
    with pytest.raises(proto.UnknownFrame, match="string type"):
        proto.frame_of({"type": ["x" * 10_000]})


def test_field_paths_of_a_bad_frame_hold_excerpts_of_peer_keys() -> None:
    with pytest.raises(InvalidRequest) as caught:
        proto.frame_of({"type": "state", "state": "ready", "k" * 10_000: 1})
    (field,) = caught.value.fields
    assert field.path == "k" * proto.EXCERPT_CHARS + "…"


def test_request_id_is_kept_only_when_it_is_a_short_string_or_integer() -> None:
    assert proto.request_id({"id": 7}) == 7
    assert proto.request_id({"id": "x" * 65}) is None
    assert proto.request_id({"id": [1]}) is None
    assert proto.request_id(["not a frame"]) is None


def test_frames_are_measured_in_bytes() -> None:
    assert proto.frame_bytes("中" * 10) == 30
    assert proto.frame_bytes(b"abc") == 3


def _ticket() -> Ticket:
    return Ticket(id="01T", channel="web", message_id="m1", received_at=utcnow(), queue="general")


def _edit_error(fields: dict[str, Any]) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        apply_edits(_ticket(), fields)
    return caught.value


def test_edit_errors_use_the_protocol_names_and_our_messages() -> None:
    exc = _edit_error({"citizen_phone": "call me", "notes": ["x"], "citizen_name": "n" * 100})
    assert set(proto.edit_errors(exc)) == {
        FieldError("fields.citizen_phone", "must be a phone number: optional +, then 3 to 20 digits"),
        FieldError("fields.notes", "Input should be a valid string"),
        FieldError("fields.citizen_name", "String should have at most 64 characters"),
    }
    assert "pydantic" not in json.dumps([str(f) for f in proto.edit_errors(exc)])


def test_fields_that_are_not_editable_are_named_by_excerpts() -> None:
    proto.check_editable({"notes": "x", "citizen_phone": "13812345678"})
    with pytest.raises(InvalidRequest) as caught:
        proto.check_editable({"status": "submitted", "z" * 5000: 1})
    assert caught.value.message.startswith("fields not editable: status, zzz")
    assert [f.path for f in caught.value.fields] == ["fields.status", "fields." + "z" * proto.EXCERPT_CHARS + "…"]


LIMITS = PendingLimits(total=6, per_address=3)


def test_the_newcomer_displaces_its_own_address_first_then_the_oldest() -> None:
    assert displaced_by_newcomer(0, 0, LIMITS) == "nobody"
    assert displaced_by_newcomer(5, 2, LIMITS) == "nobody"
    assert displaced_by_newcomer(5, 3, LIMITS) == "oldest_of_address"
    assert displaced_by_newcomer(6, 3, LIMITS) == "oldest_of_address"
    assert displaced_by_newcomer(6, 0, LIMITS) == "oldest"


class Conn:
    """A stand-in key for a connection: the room only needs identity."""

    def __init__(self, number: int) -> None:
        self.number = number


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.booleans()), max_size=60))
def test_the_waiting_room_stays_bounded_and_always_admits(steps: list[tuple[str, bool]]) -> None:
    room = WaitingRoom(LIMITS)
    waiting: list[tuple[Conn, str]] = []  # the model: arrival order
    for number, (address, leave_first) in enumerate(steps):
        if leave_first and waiting:
            conn, _ = waiting.pop(len(waiting) // 2)  # one logs in (or hangs up) meanwhile
            room.leave(conn)  # type: ignore[arg-type]
        newcomer = Conn(number)
        displaced = room.enter(newcomer, address)  # type: ignore[arg-type]
        same = [entry for entry in waiting if entry[1] == address]
        expected = same[0] if len(same) >= LIMITS.per_address else waiting[0] if len(waiting) >= LIMITS.total else None
        assert displaced is (expected[0] if expected else None)
        if expected:
            waiting.remove(expected)
        waiting.append((newcomer, address))
        assert len(room) == len(waiting) <= LIMITS.total
        assert all(sum(1 for _, a in waiting if a == addr) <= LIMITS.per_address for addr in "abcd")
