"""The seat protocol's pure parts: decoding, excerpts, edit errors; the waiting room's rule; the
server frames (round trips through the client's parser) and their documentation."""

from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError
from websockets.asyncio.server import ServerConnection

from gateway.errors import FieldError, InvalidRequest
from gateway.ticket import Ticket, TranscriptSegment, apply_edits, utcnow
from gateway.web import seat_protocol as proto
from gateway.web.seats import PendingLimits, WaitingRoom, displaced_by_newcomer
from tests.channels.strategies import conversation_messages
from tests.test_messages import sensitive_alerts


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


def stand_in(number: int) -> ServerConnection:
    """A Conn where the room's signature says ServerConnection (the room is typed for the seats'
    server, not generic over its keys; only identity and hashing are used)."""
    return cast(ServerConnection, Conn(number))


@given(st.lists(st.tuples(st.sampled_from("abcd"), st.booleans()), max_size=60))
def test_the_waiting_room_stays_bounded_and_always_admits(steps: list[tuple[str, bool]]) -> None:
    room = WaitingRoom(LIMITS)
    waiting: list[tuple[ServerConnection, str]] = []  # the model: arrival order
    for number, (address, leave_first) in enumerate(steps):
        if leave_first and waiting:
            conn, _ = waiting.pop(len(waiting) // 2)  # one logs in (or hangs up) meanwhile
            room.leave(conn)
        newcomer = stand_in(number)
        displaced = room.enter(newcomer, address)
        same = [entry for entry in waiting if entry[1] == address]
        expected = same[0] if len(same) >= LIMITS.per_address else waiting[0] if len(waiting) >= LIMITS.total else None
        assert displaced is (expected[0] if expected else None)
        if expected:
            waiting.remove(expected)
        waiting.append((newcomer, address))
        assert len(room) == len(waiting) <= LIMITS.total
        assert all(sum(1 for _, a in waiting if a == addr) <= LIMITS.per_address for addr in "abcd")


# --- server frames ---------------------------------------------------------------------------------

DOC = Path(__file__).resolve().parents[2] / "docs" / "seat-protocol.md"


def documented_frames(heading: str) -> dict[str, dict[str, bool]]:
    """A frames table of docs/seat-protocol.md: type -> {field: optional}. Values in parentheses
    (`reason` (`no_answer`)) are examples, not fields."""
    section = DOC.read_text(encoding="utf-8").split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]
    frames = {}
    for kind, cell in re.findall(r"^\| `(\w+)` \| ([^|]*(?:\\\|[^|]*)*) \|", section, flags=re.MULTILINE):
        names = re.sub(r"\([^)]*\)", "", cell)
        frames[kind] = {name: optional == "?" for name, optional in re.findall(r"`(\w+)`(\??)", names)}
    return frames


def test_the_documents_client_frames_are_the_models() -> None:
    declared = {}
    for model in (proto.Hello, proto.SetState, proto.Accept, proto.Decline, proto.Update, proto.Submit, proto.Reply,
                  proto.ConfirmMerge, proto.Split,
                  proto.Ping):  # fmt: skip
        kind = model.model_fields["type"].annotation.__args__[0]  # type: ignore[union-attr]
        fields = {
            name: not info.is_required() for name, info in model.model_fields.items() if name not in ("type", "id")
        }
        declared[kind] = fields
    assert set(declared) == proto.CLIENT_TYPES
    assert documented_frames("Client → server") == declared


def test_the_documents_server_frames_are_the_dataclasses() -> None:
    declared = {
        kind: {field.name: field.default is not dataclasses.MISSING for field in dataclasses.fields(cls)}
        for kind, cls in proto.SERVER_FRAMES.items()
    }
    assert documented_frames("Server → client") == declared


request_ids = st.none() | st.integers() | st.text(max_size=64)
ticket_ids = st.from_regex(r"[0-9A-Za-z]{1,40}", fullmatch=True)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3),
    max_leaves=5,
)
tickets_json = st.builds(
    lambda ticket_id, extra: {**extra, "id": ticket_id},
    ticket_ids,
    st.dictionaries(st.text(max_size=10), json_values, max_size=4),
)
states = st.sampled_from(["ready", "busy", "wrap_up", "away"])
reasons = st.text(max_size=40)
segments = st.builds(
    TranscriptSegment,
    speaker=st.sampled_from(["caller", "agent"]),
    text=st.text(max_size=100),
    start=st.floats(0, 1e6),
    end=st.floats(0, 1e6),
    confidence=st.floats(0, 1),
    final=st.booleans(),
)
FRAME_STRATEGIES: dict[type[proto.ServerFrame], st.SearchStrategy[proto.ServerFrame]] = {
    proto.Welcome: st.builds(
        proto.Welcome, st.just(1), st.text(max_size=32), st.text(max_size=32),
        st.lists(st.text(max_size=20)).map(tuple), st.text(max_size=16), states,
        st.lists(tickets_json, max_size=3).map(tuple), st.floats(min_value=0.01, max_value=0.99),
    ),
    proto.Offer: st.builds(proto.Offer, tickets_json, st.floats(allow_nan=False, allow_infinity=False)),
    proto.OfferRevoked: st.builds(proto.OfferRevoked, ticket_ids, reasons),
    proto.StateFrame: st.builds(proto.StateFrame, states, reasons),
    proto.TicketFrame: st.builds(proto.TicketFrame, tickets_json),
    proto.ScreenPop: st.builds(proto.ScreenPop, tickets_json),
    proto.Revoked: st.builds(proto.Revoked, ticket_ids, reasons),
    proto.CallEnded: st.builds(proto.CallEnded, ticket_ids, reasons),
    proto.Ack: st.builds(
        proto.Ack, request_ids, st.none() | ticket_ids,
        st.none() | st.sampled_from(["claimed", "declined", "submitted"]), st.none() | states,
        st.none() | st.text(max_size=20),
    ),
    proto.ErrorFrame: st.builds(
        proto.ErrorFrame, st.text(max_size=20), st.text(max_size=100), request_ids,
        st.lists(st.builds(FieldError, st.text(max_size=20), st.text(max_size=40)), max_size=3).map(tuple),
    ),
    proto.Pong: st.builds(proto.Pong, request_ids, st.text(max_size=40)),
    proto.MessageFrame: st.builds(proto.MessageFrame, ticket_ids, conversation_messages),
    proto.Delivery: st.builds(
        proto.Delivery, ticket_ids, st.text(max_size=20),
        st.sampled_from(["queued", "sent", "delivered", "failed"]), st.text(max_size=40),
    ),
    proto.Transcript: st.builds(proto.Transcript, ticket_ids, segments),
    proto.TriagedFrame: st.builds(
        proto.TriagedFrame, ticket_ids, st.integers(min_value=0, max_value=9),
        st.lists(st.sampled_from(["sensitive", "enterprise"]), max_size=2).map(tuple), st.just(()), st.just(()),
        st.one_of(st.just(""), ticket_ids), st.lists(ticket_ids, max_size=2).map(tuple),
    ),
    proto.AlertFrame: st.builds(
        proto.AlertFrame, ticket_ids, st.integers(min_value=0, max_value=9),
        st.lists(sensitive_alerts, max_size=3).map(tuple),
    ),
    proto.EscalatedFrame: st.builds(
        proto.EscalatedFrame, ticket_ids, st.sampled_from(["contact", "reply", "resolve"]),
        st.sampled_from(["reminder", "report"]), st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
        st.sampled_from(["", "1700000000000-0", "1700000000000-12"]),
    ),
}  # fmt: skip


def test_every_server_frame_has_a_strategy() -> None:
    assert set(FRAME_STRATEGIES) == set(proto.SERVER_FRAMES.values())


@given(st.one_of(*FRAME_STRATEGIES.values()))
def test_every_server_frame_round_trips_through_the_clients_parser(frame: proto.ServerFrame) -> None:
    text = frame.serialize()
    assert json.loads(text)["type"] == frame.TYPE
    assert proto.parse_server_frame(text) == frame
    assert proto.parse_server_frame(text.encode()) == frame


def test_an_offer_sends_the_stored_tickets_json_as_it_is() -> None:
    # No second validation on the hot path: whatever the store holds goes out byte for byte.
    stored = {"id": "01T", "text": "路灯\n不亮", "unknown_to_the_schema": [1, {"x": None}]}
    assert proto.Offer(stored, 20).serialize() == (
        '{"type":"offer","ticket":{"id":"01T","text":"路灯\\n不亮","unknown_to_the_schema":[1,{"x":null}]},'
        '"expires_in":20}'
    )


def test_optional_fields_are_left_out_and_required_ones_kept_even_when_null() -> None:
    assert json.loads(proto.Ack(None).serialize()) == {"type": "ack", "re": None}
    assert json.loads(proto.Ack(3, ticket="T1", status="claimed").serialize()) == {
        "type": "ack", "re": 3, "ticket": "T1", "status": "claimed"
    }  # fmt: skip
    assert json.loads(proto.ErrorFrame("too_large", "frame larger than 10 bytes", None).serialize()) == {
        "type": "error", "code": "too_large", "message": "frame larger than 10 bytes", "re": None
    }  # fmt: skip


def test_a_server_frame_the_client_cannot_follow_says_why() -> None:
    with pytest.raises(proto.UnknownFrame, match="unknown frame type 'z"):
        proto.parse_server_frame({"type": "z" * 100})
    with pytest.raises(InvalidRequest) as caught:
        proto.parse_server_frame('{"type": "offer", "ticket": {"no": "id"}, "expires_in": "soon"}')
    assert caught.value.fields == (
        FieldError("ticket", "a ticket needs a string id"),
        FieldError("expires_in", "Input should be a valid number, unable to parse string as a number"),
    )
    with pytest.raises(proto.BadJson):
        proto.parse_server_frame(b"\xff")
