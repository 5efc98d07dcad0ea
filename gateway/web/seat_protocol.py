"""The seat protocol (version 1), without I/O: client frames parsed, server frames built and parsed.

Documented in docs/seat-protocol.md (a test holds its tables to the types here). Every client frame
is a JSON object with a `type`; it may carry an `id` that the server echoes as `re` in its `ack` or
`error`, so a client can match answers. Client frames are pydantic models (`parse_client_frame`);
server frames are frozen dataclasses (`Offer`, `Ack`...) that the server sends with `serialize()`
and the terminal seat reads with `parse_server_frame`.

Nothing a peer sent goes back to it (or to a log) beyond a short excerpt with its control
characters escaped (`excerpt`): an error names the field, never repeats a 60 KB value.
"""

from __future__ import annotations

import dataclasses
import json
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

from gateway import jsonwire
from gateway.config import format_path
from gateway.errors import FieldError, GatewayError, InvalidRequest, PayloadTooLarge, ServiceUnavailable, Unauthorized
from gateway.messages import TicketId, TriageNews, adapter, fields_of
from gateway.ticket import (
    EDITABLE_FIELDS,
    ClockName,
    ConversationMessage,
    DeadlineClock,
    DeliveryStatus,
    EscalationKind,
    SensitiveAlert,
    Suggestion,
    Ticket,
    TranscriptSegment,
)

PROTOCOL_VERSION = 1


def _close(error: type[GatewayError]) -> int:
    assert error.close_code is not None, f"{error.__name__} ends no connection"
    return error.close_code


# Close codes (4000-4999 are ours; the rest are RFC 6455's). Those an error of the tree ends a
# connection with are the tree's (gateway/errors.py); the others belong to the seat protocol alone.
CLOSE_GOING_AWAY = 1001
CLOSE_TOO_BIG = _close(PayloadTooLarge)
CLOSE_INTERNAL = _close(GatewayError)
CLOSE_TRY_LATER = _close(ServiceUnavailable)
CLOSE_AUTH_FAILED = _close(Unauthorized)
CLOSE_AUTH_TIMEOUT = 4002
CLOSE_BAD_VERSION = 4003
CLOSE_REPLACED = 4008
CLOSE_TOO_SLOW = 4009

AgentState = Literal["ready", "busy", "wrap_up", "away"]
RequestId = Annotated[str, StringConstraints(max_length=64)] | int | None
JOURNAL_POSITION = r"^[0-9]{1,20}-[0-9]{1,20}$"  # a Redis stream id: an agent's journal position


class _Frame(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    id: RequestId = None


class Hello(_Frame):
    type: Literal["hello"]
    v: int = PROTOCOL_VERSION
    agent: Annotated[str, StringConstraints(max_length=64)]
    token: Annotated[str, StringConstraints(max_length=256)]
    state: AgentState = "away"
    # The last journal position this seat saw (a news frame's `seq`): what came after is replayed.
    since: Annotated[str, StringConstraints(pattern=JOURNAL_POSITION)] | None = None


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


class ConfirmMerge(_Frame):
    """The agent confirms that a 子单 (`ticket`) belongs under its 主单."""

    type: Literal["confirm_merge"]
    ticket: TicketId


class Split(_Frame):
    """The agent takes a 子单 (`ticket`) out from under its 主单: it is handled on its own."""

    type: Literal["split"]
    ticket: TicketId


class Ping(_Frame):
    type: Literal["ping"]


ClientFrame = Annotated[
    Hello | SetState | Accept | Decline | Update | Submit | Reply | ConfirmMerge | Split | Ping,
    Field(discriminator="type"),
]
_CLIENT_FRAME: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)
CLIENT_TYPES = frozenset(
    {"hello", "state", "accept", "decline", "update", "submit", "reply", "confirm_merge", "split", "ping"}
)


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
        # The first part of each location is the union's tag (the frame type): left out.
        raise InvalidRequest(f"invalid {kind} frame", _field_errors(exc, skip=1)) from None


def _field_errors(exc: ValidationError, skip: int) -> tuple[FieldError, ...]:
    return tuple(FieldError(_path(tuple(item["loc"][skip:])), _message(item)) for item in exc.errors(include_url=False))


def check_editable(fields: dict[str, Any]) -> None:
    """Refuse edits of fields an agent may not change, naming each (an excerpt of the name)."""
    unknown = [excerpt(name) for name in fields if name not in EDITABLE_FIELDS]
    if unknown:
        editable = ", ".join(sorted(EDITABLE_FIELDS))
        raise InvalidRequest(
            f"fields not editable: {', '.join(unknown)} (editable: {editable})",
            tuple(FieldError(f"fields.{name}", "not editable") for name in unknown),
        )


def check_category(category: str, catalogue: frozenset[str]) -> None:
    """With a dispatch catalogue (`catalogue`: its ids; empty: none configured) a ticket is submitted
    with one of its categories, never an empty or free-typed one."""
    if not catalogue or category in catalogue:
        return
    why = (
        "required: a category of the dispatch catalogue" if not category else "not a category of the dispatch catalogue"
    )
    raise InvalidRequest(
        "cannot submit without a category of the dispatch catalogue", (FieldError("fields.category", why),)
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


# --- server frames --------------------------------------------------------------------------------


def _with_id(ticket: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(ticket.get("id"), str):
        raise ValueError("a ticket needs a string id")
    return ticket


# A ticket as the seat sees it: the `Ticket` schema as JSON, defaults omitted. The server sends a
# stored ticket's JSON as it is (it was validated when it was written: `offer` is the hot path).
TicketJson = Annotated[dict[str, Any], AfterValidator(_with_id)]


def ticket_json(ticket: Ticket) -> dict[str, Any]:
    return ticket.model_dump(mode="json", exclude_defaults=True)


def _jsonable(value: object) -> object:
    """What `json` cannot write by itself: a field error, a transcript segment."""
    if isinstance(value, FieldError):
        return {"path": value.path, "message": value.message}
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    raise TypeError(f"{type(value).__name__} is not part of a server frame")


_OPTIONAL: dict[type[Any], dict[str, object]] = {}


def _optional_fields(cls: type[Any]) -> dict[str, object]:
    """A frame type's optional fields and their defaults: absent from the wire when at their default."""
    found = _OPTIONAL.get(cls)
    if found is None:
        found = _OPTIONAL[cls] = {
            field.name: field.default for field in dataclasses.fields(cls) if field.default is not dataclasses.MISSING
        }
    return found


@dataclass(frozen=True, slots=True)
class ServerFrame:
    """A frame the server sends; `TYPE` is its `type`. Read leniently: a client ignores fields it
    does not know, so a server may add fields within a protocol version."""

    TYPE: ClassVar[str]

    def serialize(self) -> str:
        optional = _optional_fields(type(self))
        frame: dict[str, Any] = {"type": self.TYPE}
        for name, value in fields_of(self).items():
            if name not in optional or value != optional[name]:
                frame[name] = value
        return json.dumps(frame, ensure_ascii=False, separators=(",", ":"), default=_jsonable)


@dataclass(frozen=True, slots=True)
class Welcome(ServerFrame):
    """After a good `hello`; `resumed`: the tickets the agent had claimed when it dropped;
    `yellow_share`: a deadline clock turns yellow once this share of its time is used; `seq`: the
    agent's journal position now; `missed`: the news frames journaled after the hello's `since`,
    oldest first, each with its `seq`; `gap`: some of those were trimmed from the journal before
    this login, so `missed` is not all of them (the tickets in `resumed` are whole all the same)."""

    TYPE: ClassVar[str] = "welcome"
    v: int
    agent: str
    name: str
    queues: tuple[str, ...]
    session: str
    state: AgentState
    resumed: tuple[TicketJson, ...]
    yellow_share: float = 0.8
    seq: str = ""
    missed: tuple[dict[str, Any], ...] = ()
    gap: bool = False


@dataclass(frozen=True, slots=True)
class Offer(ServerFrame):
    """A ticket of one of the seat's queues is reserved for it for `expires_in` seconds."""

    TYPE: ClassVar[str] = "offer"
    ticket: TicketJson
    expires_in: float


@dataclass(frozen=True, slots=True)
class _TicketNews(ServerFrame):
    """What became of a ticket the seat was offered or holds, and why."""

    ticket: TicketId
    reason: str


@dataclass(frozen=True, slots=True)
class _WholeTicket(ServerFrame):
    ticket: TicketJson


@dataclass(frozen=True, slots=True)
class OfferRevoked(_TicketNews):
    """The offer was not accepted in time (`no_answer`); the ticket went back to the queue."""

    TYPE: ClassVar[str] = "offer_revoked"


@dataclass(frozen=True, slots=True)
class StateFrame(ServerFrame):
    """The server changed the seat's state (`away` after a missed offer)."""

    TYPE: ClassVar[str] = "state"
    state: AgentState
    reason: str


@dataclass(frozen=True, slots=True)
class TicketFrame(_WholeTicket):
    """The ticket after `accept` or `update`."""

    TYPE: ClassVar[str] = "ticket"


@dataclass(frozen=True, slots=True)
class ScreenPop(_WholeTicket):
    """Voice: the agent's phone is ringing for this claimed ticket, shown as it is now."""

    TYPE: ClassVar[str] = "screen_pop"


@dataclass(frozen=True, slots=True)
class Revoked(_TicketNews):
    """A claimed voice ticket went back to the queue, or was closed because the caller left."""

    TYPE: ClassVar[str] = "revoked"
    seq: str = ""


@dataclass(frozen=True, slots=True)
class CallEnded(_TicketNews):
    """The call of a ticket this seat holds ended without a goodbye; the ticket stays claimed."""

    TYPE: ClassVar[str] = "call_ended"
    seq: str = ""


@dataclass(frozen=True, slots=True)
class Ack(ServerFrame):
    """A client frame (`id` echoed as `re`) was applied; the rest says what came of it."""

    TYPE: ClassVar[str] = "ack"
    re: RequestId
    ticket: TicketId | None = None
    status: Literal["claimed", "declined", "submitted", "merge_confirmed", "split"] | None = None
    state: AgentState | None = None
    outbox: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorFrame(ServerFrame):
    """A client frame was refused (`re`: its id); the connection stays open."""

    TYPE: ClassVar[str] = "error"
    code: str
    message: str
    re: RequestId
    fields: tuple[FieldError, ...] = ()


@dataclass(frozen=True, slots=True)
class Pong(ServerFrame):
    """The answer to `ping`, with the server's time."""

    TYPE: ClassVar[str] = "pong"
    re: RequestId
    time: str


@dataclass(frozen=True, slots=True)
class Transcript(ServerFrame):
    """Live speech of a caller whose ticket the seat holds; `final` false while it is still being
    recognized."""

    TYPE: ClassVar[str] = "transcript"
    ticket: TicketId
    segment: TranscriptSegment
    seq: str = ""


@dataclass(frozen=True, slots=True)
class MessageFrame(ServerFrame):
    """The citizen wrote again about a ticket the seat holds (offered or claimed): the message,
    now the last of the ticket's `messages`."""

    TYPE: ClassVar[str] = "message"
    ticket: TicketId
    message: ConversationMessage
    seq: str = ""


@dataclass(frozen=True, slots=True)
class Delivery(ServerFrame):
    """A reply of a ticket the seat holds got further: `sent` (the peer took it), `delivered` (to
    the citizen's handset), `failed` (`reason`: the peer's)."""

    TYPE: ClassVar[str] = "delivery"
    ticket: TicketId
    reply: str
    status: DeliveryStatus
    reason: str = ""
    seq: str = ""


@dataclass(frozen=True, slots=True)
class TriagedFrame(ServerFrame):
    """What triage decided about a ticket the seat holds (also on the ticket once read again)."""

    TYPE: ClassVar[str] = "triaged"
    ticket: TicketId
    priority: int
    flags: tuple[str, ...]
    suggestions: tuple[Suggestion, ...]
    clocks: tuple[DeadlineClock, ...]
    parent: str = ""
    related: tuple[str, ...] = ()
    seq: str = ""

    @classmethod
    def of(cls, news: TriageNews) -> TriagedFrame:
        return cls(news.ticket, news.priority, news.flags, news.suggestions, news.clocks, news.parent, news.related)


@dataclass(frozen=True, slots=True)
class AlertFrame(ServerFrame):
    """Triage found sensitive words in a ticket the seat holds (also the ticket's `alerts`)."""

    TYPE: ClassVar[str] = "alert"
    ticket: TicketId
    priority: int
    alerts: tuple[SensitiveAlert, ...]
    seq: str = ""


@dataclass(frozen=True, slots=True)
class EscalatedFrame(ServerFrame):
    """A 督办 event was sent for a ticket the seat holds: its `clock` is overdue (`due`), the
    `reminder` the working day after, the `report` 5 working days later."""

    TYPE: ClassVar[str] = "escalated"
    ticket: TicketId
    clock: ClockName
    kind: EscalationKind
    due: str
    seq: str = ""


SERVER_FRAMES: dict[str, type[ServerFrame]] = {
    cls.TYPE: cls
    for cls in (
        Welcome, Offer, OfferRevoked, StateFrame, TicketFrame, ScreenPop, Revoked, CallEnded, Ack, ErrorFrame, Pong,
        Transcript, MessageFrame, Delivery, AlertFrame, TriagedFrame, EscalatedFrame,
    )
}  # fmt: skip


def parse_server_frame(raw: str | bytes | dict[str, Any]) -> ServerFrame:
    """A server frame as the seat reads it: `UnknownFrame` for a type this client does not know,
    an InvalidRequest naming each wrong field (a frame missing what it must hold) otherwise."""
    data = raw if isinstance(raw, dict) else decode(raw)
    kind = data.get("type")
    cls = SERVER_FRAMES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise UnknownFrame(f"unknown frame type '{excerpt(str(kind))}'")
    try:
        return adapter(cls).validate_python({name: value for name, value in data.items() if name != "type"})
    except ValidationError as exc:
        raise InvalidRequest(f"invalid {kind} frame", _field_errors(exc, skip=0)) from None
