"""The seat protocol (version 1), without I/O: parse client frames, build server frames.

Documented in docs/seat-protocol.md. Every client frame is a JSON object with a `type`; it may carry
an `id` that the server echoes as `re` in its `ack` or `error`, so a client can match answers.

Nothing a peer sent goes back to it (or to a log) beyond a short excerpt with its control
characters escaped (`excerpt`): an error names the field, never repeats a 60 KB value.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from gateway import jsonwire
from gateway.config import format_path
from gateway.errors import FieldError, InvalidRequest
from gateway.ticket import EDITABLE_FIELDS, Ticket

PROTOCOL_VERSION = 1

# Close codes (4000-4999 are ours; the rest are RFC 6455's).
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013
CLOSE_AUTH_FAILED = 4001
CLOSE_AUTH_TIMEOUT = 4002
CLOSE_BAD_VERSION = 4003
CLOSE_REPLACED = 4008
CLOSE_TOO_SLOW = 4009

AgentState = Literal["ready", "busy", "wrap_up", "away"]
RequestId = Annotated[str, StringConstraints(max_length=64)] | int | None
TicketId = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[0-9A-Za-z]+$")]


class _Frame(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: RequestId = None


class Hello(_Frame):
    type: Literal["hello"]
    v: int = PROTOCOL_VERSION
    agent: Annotated[str, StringConstraints(max_length=64)]
    token: Annotated[str, StringConstraints(max_length=256)]
    state: AgentState = "away"


class SetState(_Frame):
    type: Literal["state"]
    state: AgentState


class Accept(_Frame):
    type: Literal["accept"]
    ticket: TicketId


class Decline(_Frame):
    type: Literal["decline"]
    ticket: TicketId
    reason: Annotated[str, StringConstraints(max_length=200)] = ""


class Update(_Frame):
    type: Literal["update"]
    ticket: TicketId
    fields: dict[str, Any] = Field(max_length=16)


class Submit(_Frame):
    type: Literal["submit"]
    ticket: TicketId
    fields: dict[str, Any] = Field(default_factory=dict, max_length=16)


class Reply(_Frame):
    type: Literal["reply"]
    ticket: TicketId
    text: Annotated[str, StringConstraints(min_length=1, max_length=1000)]


class Ping(_Frame):
    type: Literal["ping"]


ClientFrame = Annotated[
    Hello | SetState | Accept | Decline | Update | Submit | Reply | Ping, Field(discriminator="type")
]
_CLIENT_FRAME: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)
CLIENT_TYPES = frozenset({"hello", "state", "accept", "decline", "update", "submit", "reply", "ping"})


class UnknownFrame(InvalidRequest):
    code = "unknown_type"


class BadJson(InvalidRequest):
    code = "invalid_json"


EXCERPT_CHARS = 32  # the most of a peer's string an error message repeats

# Characters that must not reach a terminal (or a log line) as they are: controls (C0, DEL, C1),
# format characters (bidi overrides and isolates, zero-width ones), lone surrogates, the Unicode
# line and paragraph separators, and code points this Python's tables do not know (a newer terminal
# may know one as a format character). The zero-width joiner stays: emoji sequences need it.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Cn", "Zl", "Zp"})
_KEPT_FORMAT = frozenset({"\u200d"})


def _escaped(char: str) -> str:
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def escape_controls(text: str, keep: str = "") -> str:
    """`text` with every control, format and separator character written as an escape (`\\x1b`,
    `\\u202e`), except the characters in `keep` (say a newline). Plain text comes back as it is."""
    if text.isprintable():
        return text
    return "".join(
        _escaped(char)
        if char not in keep and char not in _KEPT_FORMAT and unicodedata.category(char) in _UNSAFE_CATEGORIES
        else char
        for char in text
    )


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """A peer's string as we may repeat it: its first `limit` characters, escaped."""
    return escape_controls(text[:limit]) + ("…" if len(text) > limit else "")


def decode(raw: str | bytes) -> dict[str, Any]:
    """One websocket message as a JSON object (nesting bounded), or `BadJson` saying why not."""
    try:
        data = jsonwire.loads(raw)
    except jsonwire.TooDeep:
        raise BadJson(f"the frame nests deeper than {jsonwire.MAX_DEPTH} levels") from None
    except ValueError:
        raise BadJson("the frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadJson("a frame must be a JSON object")
    return data


def parse_client_frame(raw: str | bytes) -> ClientFrame:
    """Turn one websocket message into a frame, or raise an InvalidRequest that says why."""
    return frame_of(decode(raw))


def frame_of(data: dict[str, Any]) -> ClientFrame:
    """A decoded frame validated, or an InvalidRequest naming each wrong field (never its value)."""
    kind = data.get("type")
    if not isinstance(kind, str):
        raise UnknownFrame(f"a frame needs a string type; known: {', '.join(sorted(CLIENT_TYPES))}")
    if kind not in CLIENT_TYPES:
        raise UnknownFrame(f"unknown frame type '{excerpt(kind)}'; known: {', '.join(sorted(CLIENT_TYPES))}")
    try:
        return _CLIENT_FRAME.validate_python(data)
    except ValidationError as exc:
        fields = tuple(
            FieldError(_path(tuple(item["loc"][1:])), _message(item)) for item in exc.errors(include_url=False)
        )
        raise InvalidRequest(f"invalid {kind} frame", fields) from None


def check_editable(fields: dict[str, Any]) -> None:
    """Refuse edits of fields an agent may not change, naming each (an excerpt of the name)."""
    unknown = [excerpt(name) for name in fields if name not in EDITABLE_FIELDS]
    if unknown:
        editable = ", ".join(sorted(EDITABLE_FIELDS))
        raise InvalidRequest(
            f"fields not editable: {', '.join(unknown)} (editable: {editable})",
            tuple(FieldError(f"fields.{name}", "not editable") for name in unknown),
        )


def edit_errors(exc: ValidationError) -> tuple[FieldError, ...]:
    """What is wrong with an agent's edits, by the names the agent used (`fields.citizen_phone`):
    the ticket's own paths (`citizen.phone`) and pydantic's wording stay inside."""
    found = []
    for item in exc.errors(include_url=False):
        location = tuple(str(part) for part in item["loc"])
        name = "_".join(location[:2]) if location[:1] == ("citizen",) else location[0] if location else ""
        path = f"fields.{name}" if name in EDITABLE_FIELDS else "fields"
        found.append(FieldError(path, _message(item)))
    return tuple(found)


def _path(location: tuple[str | int, ...]) -> str:
    """A field path where the keys a peer chose (a dict's keys) appear only as excerpts."""
    return format_path(tuple(part if isinstance(part, int) else excerpt(part) for part in location))


def _message(item: Any) -> str:
    """pydantic's message without its prefix for our own validators' messages ("Value error, ")."""
    message = str(item["msg"])
    return message.removeprefix("Value error, ") if item["type"] == "value_error" else message


def request_id(data: Any) -> Any:
    """Best effort: the `id` of a decoded frame that failed to validate, so the error can be matched."""
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str | int) and len(str(value)) <= 64 else None


def frame_bytes(message: str | bytes) -> int:
    """A message's size as the frame limit counts it: UTF-8 bytes, not characters."""
    return len(message.encode()) if isinstance(message, str) else len(message)


def _dump(frame: dict[str, Any]) -> str:
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":"))


def _ticket(ticket: Ticket | dict[str, Any]) -> Any:
    """A Ticket, or a stored ticket's JSON data (validated when it was written) as it is."""
    return ticket if isinstance(ticket, dict) else ticket.model_dump(mode="json", exclude_defaults=True)


def welcome(agent: str, name: str, queues: list[str], session: str, resumed: list[Ticket], state: str) -> str:
    return _dump(
        {
            "type": "welcome",
            "v": PROTOCOL_VERSION,
            "agent": agent,
            "name": name,
            "queues": queues,
            "session": session,
            "state": state,
            "resumed": [_ticket(ticket) for ticket in resumed],
        }
    )


def offer(ticket: Ticket | dict[str, Any], expires_in: float) -> str:
    return _dump({"type": "offer", "ticket": _ticket(ticket), "expires_in": expires_in})


def offer_revoked(ticket_id: str, reason: str) -> str:
    return _dump({"type": "offer_revoked", "ticket": ticket_id, "reason": reason})


def ticket_frame(ticket: Ticket | dict[str, Any]) -> str:
    return _dump({"type": "ticket", "ticket": _ticket(ticket)})


def ack(re: Any, **extra: Any) -> str:
    return _dump({"type": "ack", "re": re, **extra})


def state_frame(state: str, reason: str) -> str:
    return _dump({"type": "state", "state": state, "reason": reason})


def error(code: str, message: str, re: Any = None, fields: tuple[FieldError, ...] = ()) -> str:
    frame: dict[str, Any] = {"type": "error", "code": code, "message": message, "re": re}
    if fields:
        frame["fields"] = [{"path": f.path, "message": f.message} for f in fields]
    return _dump(frame)


def pong(re: Any, server_time: str) -> str:
    return _dump({"type": "pong", "re": re, "time": server_time})


def screen_pop(ticket: Ticket) -> str:
    """The agent's phone is ringing for this ticket: show it (with everything known so far)."""
    return _dump({"type": "screen_pop", "ticket": _ticket(ticket)})


def revoked(ticket_id: str, reason: str) -> str:
    return _dump({"type": "revoked", "ticket": ticket_id, "reason": reason})


def call_ended(ticket_id: str, reason: str) -> str:
    return _dump({"type": "call_ended", "ticket": ticket_id, "reason": reason})


def transcript(ticket_id: str, segment: dict[str, Any]) -> str:
    """Live speech of the caller: `final` false while the utterance is still being recognized."""
    return _dump({"type": "transcript", "ticket": ticket_id, "segment": segment})
