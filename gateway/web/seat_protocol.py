"""The seat protocol (version 1), without I/O: parse client frames, build server frames.

Documented in docs/seat-protocol.md. Every client frame is a JSON object with a `type`; it may carry
an `id` that the server echoes as `re` in its `ack` or `error`, so a client can match answers.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from gateway.config import format_path
from gateway.errors import FieldError, InvalidRequest
from gateway.ticket import Ticket

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


def parse_client_frame(raw: str | bytes) -> ClientFrame:
    """Turn one websocket message into a frame, or raise an InvalidRequest that says why."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise BadJson("the frame is not valid JSON") from None
    if not isinstance(data, dict):
        raise BadJson("a frame must be a JSON object")
    kind = data.get("type")
    if kind not in CLIENT_TYPES:
        raise UnknownFrame(f"unknown frame type {kind!r}; known: {', '.join(sorted(CLIENT_TYPES))}")
    try:
        return _CLIENT_FRAME.validate_python(data)
    except ValidationError as exc:
        fields = tuple(
            FieldError(format_path(tuple(item["loc"][1:])), item["msg"]) for item in exc.errors(include_url=False)
        )
        raise InvalidRequest(f"invalid {kind} frame", fields) from None


def request_id(raw: str | bytes) -> Any:
    """Best effort: the `id` of a frame that failed to parse, so the error can still be matched."""
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    value = data.get("id") if isinstance(data, dict) else None
    return value if isinstance(value, str | int) and len(str(value)) <= 64 else None


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
