"""Every message that crosses Redis between the gateway's processes, typed.

A sender builds a frozen dataclass and sends its `serialize()`; a receiver calls `parse` (of the
message, or of its channel: `parse_control`, `parse_worker_command`), which returns the dataclass or
raises `MalformedMessage` naming what is wrong (never repeating the value). The receiver logs that
in one line and drops the message: one bad message never stops a loop. `serialize` checks too, so
a malformed message fails where it is made, not in another process.

Where each one travels (docs/redis-keys.md lists them with their fields):
- `{prefix}:control` (Pub/Sub): `Login`, `ScreenPop`, `Revoke`, `CallEnded`, each one line: its
  kind, then its fields as words separated by single spaces;
- `{prefix}:transcripts` (Pub/Sub): `Transcript`, JSON;
- `{prefix}:news` (Pub/Sub): `ConversationNews`, JSON;
- `{prefix}:alerts` (stream, field `m`): `Alerted`, JSON;
- `{prefix}:triage:news` (Pub/Sub): `TriageNews`, JSON;
- `{prefix}:surges` (stream, field `m`): `SurgeWarning`, JSON;
- `{prefix}:escalations` (stream, field `m`): `Escalated`, JSON;
- `{prefix}:worker:{id}:inbox` (stream): `ConnectAgent`, its `op` naming the command;
- `{prefix}:workers:dead` (stream): `DeadWorker`;
- `{prefix}:asr:pending` (sorted set): `PendingRecording`, JSON, the member itself;
- `{prefix}:created` (stream): `Created`, written by the INTAKE script;
- `{prefix}:outbox:{channel}` (stream): `Reply`, the citizen as JSON;
- `{prefix}:submitted` (stream): `Submitted`, the ticket as JSON, written by the SETTLE script.

The wake channel's payload (the queue or stream with new work) is informational: receivers only
need the wake-up, so it has no type here.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Json, StringConstraints, TypeAdapter, ValidationError

from gateway import jsonwire
from gateway.config import AgentId, format_path
from gateway.errors import InvalidRequest
from gateway.ticket import (
    Channel,
    Citizen,
    ClockName,
    ConversationMessage,
    DeadlineClock,
    EscalationKind,
    SensitiveAlert,
    Suggestion,
    Ticket,
    TranscriptSegment,
)

TicketId = Annotated[str, StringConstraints(min_length=1, max_length=40, pattern=r"^[0-9A-Za-z]+$")]
# A word of a control line: printable ASCII, no space (the line's separator).
Word = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[\x21-\x7e]+$")]
Reason = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$")]
SipUri = Annotated[str, StringConstraints(max_length=256, pattern=r"^sips?:[^\s]+$")]
Path = Annotated[str, StringConstraints(min_length=1, max_length=512)]


class MalformedMessage(InvalidRequest):
    """A message from another process of ours that this one cannot read; logged and dropped."""

    code = "malformed_message"


M = TypeVar("M")


_ADAPTERS: dict[type[Any], TypeAdapter[Any]] = {}


def adapter(cls: type[M]) -> TypeAdapter[M]:
    """One validator per message type, built on first use (building one costs milliseconds)."""
    adapter = _ADAPTERS.get(cls)
    if adapter is None:
        adapter = _ADAPTERS[cls] = TypeAdapter(cls)
    return adapter


def validated(cls: type[M], data: Mapping[str, Any], what: str) -> M:
    """`data` as a `cls`, or MalformedMessage naming each wrong field (its path, never its value)."""
    try:
        message: M = adapter(cls).validate_python(dict(data))
    except ValidationError as exc:
        problems = "; ".join(
            f"{format_path(tuple(item['loc'])) or 'message'}: {item['msg']}" for item in exc.errors(include_url=False)
        )
        raise MalformedMessage(f"malformed {what}: {problems}") from None
    return message


def fields_of(message: Any) -> dict[str, Any]:
    """A message's (or frame's) fields by name, in their declared order."""
    return {field.name: getattr(message, field.name) for field in dataclasses.fields(message)}


def _text(value: bytes | str, what: str) -> str:
    if isinstance(value, str):
        return value
    try:
        return value.decode()
    except UnicodeDecodeError:
        raise MalformedMessage(f"malformed {what}: not UTF-8") from None


def _json_object(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        data = jsonwire.loads(raw)
    except ValueError:
        raise MalformedMessage(f"malformed {what}: not JSON") from None
    if not isinstance(data, dict):
        raise MalformedMessage(f"malformed {what}: not a JSON object")
    return data


def _dumps(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()


Fields = Mapping[bytes, bytes] | Mapping[str, str]


def _entry(fields: Fields, what: str) -> dict[str, str]:
    """A stream entry's fields as text (redis-py returns bytes)."""
    return {_text(name, what): _text(value, what) for name, value in fields.items()}


@dataclass(frozen=True, slots=True)
class _Message:
    # One release of the gateway talks to itself: a field it does not know is a fault, not news.
    __pydantic_config__ = ConfigDict(extra="forbid")


def _jsonable(value: Any) -> Any:
    """A field's value as JSON takes it: models dumped, tuples as lists, times in ISO 8601."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class _JsonMessage(_Message):
    """A message that travels as one JSON object of its fields; `WHAT` names it in errors."""

    WHAT: ClassVar[str]

    def json_fields(self) -> dict[str, Any]:
        return {name: _jsonable(value) for name, value in fields_of(self).items()}

    def serialize(self) -> bytes:
        raw = _dumps(self.json_fields())
        self.parse(raw)
        return raw

    @classmethod
    def parse(cls, raw: bytes | str) -> Self:
        return validated(cls, _json_object(raw, cls.WHAT), cls.WHAT)


# --- the control channel -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _ControlLine(_Message):
    """One line: the kind, then the fields in declared order, separated by single spaces."""

    KIND: ClassVar[str]

    def serialize(self) -> bytes:
        line = " ".join((self.KIND, *fields_of(self).values())).encode()
        parse_control(line)  # what the receivers would refuse fails here, where it was made
        return line


@dataclass(frozen=True, slots=True)
class Login(_ControlLine):
    """An agent's newest login: the processes holding an older one close it (4008)."""

    KIND: ClassVar[str] = "login"
    agent: AgentId
    session: Word


@dataclass(frozen=True, slots=True)
class _CallNews(_ControlLine):
    """A media worker's news about a voice ticket, for the seat of the agent holding it."""

    agent: AgentId
    ticket: TicketId


@dataclass(frozen=True, slots=True)
class ScreenPop(_CallNews):
    """The worker rings the agent's phone for this claimed ticket."""

    KIND: ClassVar[str] = "screen_pop"


@dataclass(frozen=True, slots=True)
class _CallOutcome(_CallNews):
    reason: Reason


@dataclass(frozen=True, slots=True)
class Revoke(_CallOutcome):
    """A voice ticket the agent held went back to the queue or was closed (`reason` tells which)."""

    KIND: ClassVar[str] = "revoke"


@dataclass(frozen=True, slots=True)
class CallEnded(_CallOutcome):
    """The call of a ticket the agent holds ended without a goodbye; the ticket stays claimed."""

    KIND: ClassVar[str] = "call_ended"


ControlMessage = Login | ScreenPop | Revoke | CallEnded
CallEvent = ScreenPop | Revoke | CallEnded
CallEventKind = Literal["screen_pop", "revoke", "call_ended"]
CONTROL: dict[str, type[ControlMessage]] = {cls.KIND: cls for cls in (Login, ScreenPop, Revoke, CallEnded)}


def call_event(kind: CallEventKind, agent: str, ticket: str, reason: str = "") -> CallEvent:
    """A media worker's news for a seat, by kind (a screen pop has no reason)."""
    if kind == "screen_pop":
        return ScreenPop(agent, ticket)
    return (Revoke if kind == "revoke" else CallEnded)(agent, ticket, reason)


def parse_control(raw: bytes | str) -> ControlMessage:
    """One message of the control channel."""
    words = _text(raw, "control message").split(" ")
    cls = CONTROL.get(words[0])
    if cls is None:
        raise MalformedMessage(f"unknown control message kind; known: {', '.join(sorted(CONTROL))}")
    names = [field.name for field in dataclasses.fields(cls)]
    if len(words) - 1 != len(names):
        raise MalformedMessage(f"malformed {cls.KIND} message: expected {len(names)} words ({' '.join(names)})")
    return validated(cls, dict(zip(names, words[1:], strict=True)), f"{cls.KIND} message")


# --- JSON messages --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Transcript(_JsonMessage):
    """Live speech of a call, for the seat holding its ticket (`{prefix}:transcripts`)."""

    WHAT: ClassVar[str] = "transcript"

    ticket: TicketId
    segment: TranscriptSegment


@dataclass(frozen=True, slots=True)
class ConversationNews(_JsonMessage):
    """A conversation's new message (`in`), or a reply's new delivery state (`out`), for the seat
    of the agent holding the ticket (`{prefix}:news`)."""

    WHAT: ClassVar[str] = "conversation news"

    ticket: TicketId
    agent: AgentId
    message: ConversationMessage

    def json_fields(self) -> dict[str, Any]:
        # The message without its defaults, as the conversation keeps it.
        message = self.message.model_dump(mode="json", exclude_defaults=True)
        return {"ticket": self.ticket, "agent": self.agent, "message": message}


@dataclass(frozen=True, slots=True)
class Alerted(_JsonMessage):
    """Sensitive words triage found on a ticket (gateway/triage/assess.py), for the supervisors
    (`{prefix}:alerts`, the entry's field `m`)."""

    WHAT: ClassVar[str] = "alert"

    ticket: TicketId
    queue: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    priority: int
    alerts: tuple[SensitiveAlert, ...]


@dataclass(frozen=True, slots=True)
class SurgeWarning(_JsonMessage):
    """Many contacts of one category at one place in a short time (集中爆发, gateway/triage/surge.py),
    for the supervisors (`{prefix}:surges`, the entry's field `m`)."""

    WHAT: ClassVar[str] = "surge warning"

    category: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    place: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    count: int
    usual: float
    at: Annotated[str, StringConstraints(min_length=1, max_length=40)]  # ISO time of the ticket that tipped it


@dataclass(frozen=True, slots=True)
class Escalated(_JsonMessage):
    """A 督办 event sent for an overdue clock (gateway/triage/escalate.py), for the supervisors
    (`{prefix}:escalations`, the entry's field `m`): the `reminder` when the working day after the
    clock's `due` day opens, the `report` 5 working days later; `at`: when the event fell due."""

    WHAT: ClassVar[str] = "escalation"

    ticket: TicketId
    queue: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    clock: ClockName
    kind: EscalationKind
    due: AwareDatetime
    at: AwareDatetime


NewsKind = Literal["triaged", "answered_by_parent"]


@dataclass(frozen=True, slots=True)
class TriageNews(_JsonMessage):
    """For the seat holding a ticket (`{prefix}:triage:news`): what triage decided about it
    (`triaged`: its priority, flags, suggestions, alerts, clocks, its 主单 and the citizen's other
    open tickets), or that its 主单's answer closed it (`answered_by_parent`)."""

    WHAT: ClassVar[str] = "triage news"

    ticket: TicketId
    kind: NewsKind
    priority: int = 0
    flags: tuple[Annotated[str, StringConstraints(max_length=32)], ...] = ()
    suggestions: tuple[Suggestion, ...] = ()
    alerts: tuple[SensitiveAlert, ...] = ()
    clocks: tuple[DeadlineClock, ...] = ()
    parent: Annotated[str, StringConstraints(max_length=40)] = ""
    related: tuple[Annotated[str, StringConstraints(max_length=40)], ...] = ()

    @classmethod
    def of(cls, ticket: Ticket, parent: str = "") -> TriageNews:
        return cls(
            ticket.id, "triaged", ticket.priority, ticket.flags, ticket.suggestions, ticket.alerts, ticket.clocks,
            parent, ticket.related,
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class PendingRecording(_JsonMessage):
    """A recording live recognition missed, waiting for `transcribe --pending` (the sorted set's
    member is this JSON itself; its score is when it was added)."""

    WHAT: ClassVar[str] = "pending recording"

    ticket: TicketId
    path: Path
    reason: Reason


# --- stream entries -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Entry(_Message):
    """A stream entry: the message's fields as text, under their wire names (`WIRE`: the names
    that differ)."""

    WIRE: ClassVar[dict[str, str]] = {}

    def fields(self) -> dict[str, str]:
        """The entry's fields, by attribute name (a message whose fields are not text says how)."""
        return fields_of(self)

    def serialize(self) -> dict[str, str]:
        entry = {self.WIRE.get(name, name): value for name, value in self.fields().items()}
        self.parse(entry)
        return entry

    @classmethod
    def parse(cls, fields: Fields) -> Self:
        what = f"{cls.__name__} entry"
        by_wire = {wire: name for name, wire in cls.WIRE.items()}
        return validated(cls, {by_wire.get(name, name): value for name, value in _entry(fields, what).items()}, what)


@dataclass(frozen=True, slots=True)
class ConnectAgent(_Entry):
    """To the worker holding the caller (its inbox): ring this agent's phone for this ticket."""

    OP: ClassVar[str] = "connect"
    ticket: TicketId
    agent: AgentId
    uri: SipUri

    def fields(self) -> dict[str, str]:
        return {"op": self.OP, **fields_of(self)}

    @classmethod
    def parse(cls, fields: Fields) -> Self:
        text = _entry(fields, "worker command")
        if text.pop("op", None) != cls.OP:
            raise MalformedMessage(f"malformed worker command: op is not {cls.OP}")
        return validated(cls, text, "connect command")


WorkerCommand = ConnectAgent
WORKER_COMMANDS: dict[str, type[WorkerCommand]] = {ConnectAgent.OP: ConnectAgent}


def parse_worker_command(fields: Fields) -> WorkerCommand:
    """One entry of a worker's inbox."""
    cls = WORKER_COMMANDS.get(_entry(fields, "worker command").get("op", ""))
    if cls is None:
        raise MalformedMessage(f"unknown worker command; known: {', '.join(sorted(WORKER_COMMANDS))}")
    return cls.parse(fields)


@dataclass(frozen=True, slots=True)
class DeadWorker(_Entry):
    """A worker whose heartbeat lapsed and whose calls a core settled: the SIP front ends its
    dialogs (`sip` empty: its address was not known any more)."""

    worker: Word
    sip: Annotated[str, StringConstraints(max_length=256)]


@dataclass(frozen=True, slots=True)
class Created(_Entry):
    """A ticket as it was created (written by the INTAKE script, hence the short field names)."""

    WIRE: ClassVar[dict[str, str]] = {"ticket": "t", "queue": "q", "channel": "c"}
    ticket: TicketId
    queue: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    channel: Channel


@dataclass(frozen=True, slots=True)
class Reply(_Entry):
    """An agent's reply to a citizen, for the channel adapter that delivers it; or (`kind` `page`)
    triage paging a supervisor about the ticket (gateway/triage/paging.py): `citizen` is then the
    supervisor's phone, and the page's states go to the ticket's history, not its conversation."""

    ticket: TicketId
    channel: Channel
    citizen: Json[Citizen]
    text: Annotated[str, StringConstraints(min_length=1, max_length=1000)]
    agent: AgentId
    kind: Literal["reply", "page"] = "reply"

    def fields(self) -> dict[str, str]:
        return {**fields_of(self), "citizen": self.citizen.model_dump_json(exclude_none=True)}


@dataclass(frozen=True, slots=True)
class Submitted(_Entry):
    """A submitted ticket, whole, for the work-order system (written by the SETTLE script)."""

    ticket: Json[Ticket]

    def fields(self) -> dict[str, str]:
        return {"ticket": self.ticket.model_dump_json(exclude_defaults=True)}


# Every message type, for the documentation test and the round-trip tests.
MESSAGES: tuple[type[_Message], ...] = (
    Login,
    ScreenPop,
    Revoke,
    CallEnded,
    Transcript,
    ConversationNews,
    Alerted,
    TriageNews,
    SurgeWarning,
    Escalated,
    PendingRecording,
    ConnectAgent,
    DeadWorker,
    Created,
    Reply,
    Submitted,
)
