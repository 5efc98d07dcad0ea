"""The Ticket: the one schema that crosses every boundary (HTTP, Redis, seats, channels, voice).

Everything here is plain data and pure functions. A ticket is validated whenever it is built from
outside data (`Ticket.from_json`) and serialized compactly (defaults omitted) for Redis and the wire.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator
from ulid import ULID

Channel = Literal["voice", "sms", "wechat", "telegram", "web"]
CHANNELS: tuple[Channel, ...] = ("voice", "sms", "wechat", "telegram", "web")

Status = Literal["draft", "queued", "offered", "claimed", "submitted", "abandoned"]

# Lifecycle: draft -> queued -> offered -> claimed -> submitted, or abandoned from any open state.
# Offered and claimed tickets return to queued (declined, offer timed out, agent gone). A submitted
# ticket returns to queued when the citizen answers its 回访 不满意 (重办: flagged `reopened`,
# gateway/channels/followup.py). The queue's Lua scripts enforce it (gateway/queue/scripts.py).

MAX_TEXT_CHARS = 4000
# An answer for the citizen, sent with the 回访 question in one reply (at most 1000 characters).
MAX_ANSWER_CHARS = 900
MAX_PRIORITY = 9
PRIORITY_NORMAL = 0
PRIORITY_URGENT = 5
PRIORITY_ENTERPRISE = 7

ShortText = Annotated[str, StringConstraints(max_length=128, strip_whitespace=True)]
MessageId = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
Flag = Annotated[str, StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z0-9_]+$")]

_PHONE = re.compile(r"^\+?[0-9]{3,20}$")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)


class Citizen(_Frozen):
    """Who contacted us, as far as the channel tells."""

    phone: str | None = None
    wechat_openid: ShortText | None = None
    telegram_chat_id: int | None = None
    name: Annotated[str, StringConstraints(max_length=64)] | None = None

    @field_validator("phone", mode="before")
    @classmethod
    def _normalize_phone(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        digits = re.sub(r"[\s\-()]", "", value)
        if not _PHONE.match(digits):
            raise ValueError("must be a phone number: optional +, then 3 to 20 digits")
        return digits


class Attachment(_Frozen):
    kind: Literal["recording", "image", "audio", "video", "file", "location"]
    path: Annotated[str, StringConstraints(max_length=512)] | None = None
    media_id: ShortText | None = None
    mime: ShortText | None = None
    seconds: float | None = Field(default=None, ge=0)


class TranscriptSegment(_Frozen):
    speaker: Literal["caller", "agent"] = "caller"
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
    start: float = Field(ge=0)
    end: float = Field(ge=0)
    confidence: float = Field(ge=0, le=1)
    final: bool = True


class VoiceCall(_Frozen):
    """Where a voice ticket's call lives: the media worker holding the caller, and the numbers."""

    worker: ShortText
    call_id: ShortText  # the gateway's own id for the call (also the recording's file name)
    caller: Annotated[str, StringConstraints(max_length=64)] = ""
    called: Annotated[str, StringConstraints(max_length=64)] = ""


class HistoryEntry(_Frozen):
    """One line of the append-only history: who did what, when."""

    at: datetime
    actor: ShortText
    action: ShortText
    detail: dict[str, str] = Field(default_factory=dict)


class Suggestion(_Frozen):
    """A dispatch suggestion (分派目录, gateway/triage/dispatch.py): a catalogue category, its
    department, a score in [0, 1] and the words of the contact that weighed most."""

    category: ShortText
    department: ShortText
    score: float = Field(ge=0, le=1)
    evidence: tuple[ShortText, ...] = ()


MAX_SUGGESTIONS = 3


MAX_CHILDREN = 1000  # a 主单's 子单 (`[triage.merge] max_children`, at most this)
MAX_RELATED = 100  # the citizen's other open tickets linked (`[triage.merge] max_related`, at most this)

AlertSource = Literal["text", "transcript", "message"]
MAX_ALERTS = 32


class SensitiveAlert(_Frozen):
    """A sensitive word (敏感词, gateway/triage/sensitive.py) in what the citizen wrote or said:
    the word as listed, its category and severity (1-3), the words around it as written, where it
    was found, and when triage found it."""

    word: ShortText
    category: ShortText
    severity: int = Field(ge=1, le=3)
    context: Annotated[str, StringConstraints(max_length=512)]
    source: AlertSource = "text"
    at: datetime


ClockName = Literal["contact", "reply", "resolve"]
EscalationKind = Literal["reminder", "report"]  # 督办: the working day after due, then 5 more


class DeadlineClock(_Frozen):
    """One deadline (红黄绿三色预警, gateway/triage/deadlines.py): what must be done (contact the
    citizen, reply, resolve), its limit as the catalogue names it ("2h", "5wd"), and when it runs
    out. Its colour is not stored: it depends on the time it is looked at."""

    name: ClockName
    limit: Annotated[str, StringConstraints(pattern=r"^[1-9][0-9]{0,2}(h|wd)$")]
    due: datetime


Direction = Literal["in", "out"]
DeliveryStatus = Literal["queued", "sent", "delivered", "failed"]
MAX_MESSAGES = 200  # the default of `[conversations] max_messages`


class ConversationMessage(_Frozen):
    """One message of a ticket's conversation with the citizen: what they wrote (`in`, named by the
    channel's message id) or an agent's reply (`out`, named by its outbox entry id) with how far
    its delivery got."""

    direction: Direction
    id: MessageId
    at: datetime
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)]
    status: DeliveryStatus | None = None  # `out` only
    reason: Annotated[str, StringConstraints(max_length=256)] = ""  # why it failed, as the peer said


class Ticket(_Frozen):
    id: str
    channel: Channel
    message_id: MessageId
    citizen: Citizen = Field(default_factory=Citizen)
    received_at: datetime
    text: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)] = ""
    attachments: tuple[Attachment, ...] = ()
    transcript: tuple[TranscriptSegment, ...] = ()
    ivr_path: Annotated[str, StringConstraints(max_length=64, pattern=r"^[0-9*#]*$")] = ""
    queue: ShortText
    priority: int = Field(default=PRIORITY_NORMAL, ge=0, le=MAX_PRIORITY)
    flags: tuple[Flag, ...] = ()
    status: Status = "draft"
    agent: ShortText | None = None
    # Fields the agent fills in while handling the ticket.
    category: ShortText = ""
    address: Annotated[str, StringConstraints(max_length=256)] = ""
    notes: Annotated[str, StringConstraints(max_length=MAX_TEXT_CHARS)] = ""
    voice: VoiceCall | None = None
    # Speech navigation (智能语音导航): the target the caller was routed to, and why.
    route: ShortText = ""
    route_evidence: Annotated[str, StringConstraints(max_length=256)] = ""
    # The citizen's rating: the voice survey's (the flow's rating names), or their answer to the
    # 回访 (satisfied, basic, unsatisfied; unrated: a comment; no_answer: none in time).
    satisfaction: ShortText = ""
    # What the agent answers the citizen: sent on submit with the 回访 question (gateway/channels/followup.py).
    answer: Annotated[str, StringConstraints(max_length=MAX_ANSWER_CHARS)] = ""
    # The knowledge-base entry (知识库, gateway/knowledge/) the agent answered from directly, when
    # they did: what the 直办率 counts.
    answered_from: Annotated[str, StringConstraints(max_length=64, pattern=r"^[A-Za-z0-9_.:-]*$")] = ""
    history: tuple[HistoryEntry, ...] = ()
    # A message channel's conversation, oldest first, at most `[conversations] max_messages`:
    # beyond, the oldest are dropped and counted (the first one is `text` anyway).
    messages: tuple[ConversationMessage, ...] = ()
    messages_dropped: int = Field(default=0, ge=0)
    # Triage's dispatch suggestions, best first (written once by the triage consumer; the agent
    # still chooses `category`).
    suggestions: Annotated[tuple[Suggestion, ...], Field(max_length=MAX_SUGGESTIONS)] = ()
    # Sensitive words triage found (the ticket is flagged `sensitive`, and its priority raised per
    # severity), and its deadlines: by the category the agent chose, else the best suggestion's.
    alerts: Annotated[tuple[SensitiveAlert, ...], Field(max_length=MAX_ALERTS)] = ()
    clocks: tuple[DeadlineClock, ...] = Field(default=(), max_length=3)
    # 主单 + 子单 (gateway/triage/merge.py), written by the triage consumer: where the contact is
    # (`district/street` or `district` of the gazetteer); the 主单 this ticket is a 子单 of, and
    # whether an agent confirmed it; a 主单's 子单 (answered with it); the same citizen's other
    # open tickets when it came in (一人多诉: a link, not a merge). `parent`, `merge_confirmed` and
    # `children` are kept beside the document (gateway/queue/store.py), so an agent's edit of the
    # document cannot lose a link written meanwhile.
    place: Annotated[str, StringConstraints(max_length=72)] = ""
    parent: Annotated[str, StringConstraints(max_length=26)] = ""
    merge_confirmed: bool = False
    children: tuple[str, ...] = Field(default=(), max_length=MAX_CHILDREN)
    related: tuple[str, ...] = Field(default=(), max_length=MAX_RELATED)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def from_json(cls, data: bytes | str) -> Ticket:
        return cls.model_validate_json(data)


# The fields an agent may change with an `update` frame, and nothing else.
EDITABLE_FIELDS = frozenset(
    {"text", "category", "address", "notes", "answer", "answered_from", "citizen_name", "citizen_phone"}
)


def conversation_identity(ticket: Ticket) -> str | None:
    """Who a message channel's ticket talks with, as that channel names them (None: the channel has
    no conversation: voice, web forms)."""
    citizen = ticket.citizen
    identity = {
        "sms": citizen.phone,
        "wechat": citizen.wechat_openid,
        "telegram": None if citizen.telegram_chat_id is None else str(citizen.telegram_chat_id),
    }.get(ticket.channel)
    return identity or None


def identities(ticket: Ticket) -> tuple[str, ...]:
    """The citizen as each channel names them, whichever channel this ticket came by: `phone:…`,
    `wechat:…`, `telegram:…` (an SMS from a number and a web form giving it are one citizen)."""
    citizen = ticket.citizen
    found = (
        f"phone:{citizen.phone}" if citizen.phone else "",
        f"wechat:{citizen.wechat_openid}" if citizen.wechat_openid else "",
        f"telegram:{citizen.telegram_chat_id}" if citizen.telegram_chat_id is not None else "",
    )
    return tuple(identity for identity in found if identity)


def citizen_of(channel: Channel, identity: str) -> dict[str, object]:
    """The ticket's citizen as a channel's identity names them (`conversation_identity`'s inverse)."""
    if channel == "wechat":
        return {"wechat_openid": identity}
    if channel == "telegram":
        return {"telegram_chat_id": int(identity)}
    return {"phone": identity}


def new_ticket_id(now: datetime) -> str:
    """A ULID: sortable by creation time, unique across processes without coordination."""
    return str(ULID.from_datetime(now))


def utcnow() -> datetime:
    return datetime.now(UTC)


def history_entry(actor: str, action: str, now: datetime, **detail: str) -> HistoryEntry:
    return HistoryEntry(at=now, actor=actor, action=action, detail=detail)


def apply_edits(ticket: Ticket, edits: dict[str, Any]) -> Ticket:
    """Return the ticket with an agent's edits applied (validated as a whole)."""
    unknown = set(edits) - EDITABLE_FIELDS
    if unknown:
        raise ValueError(f"fields not editable: {', '.join(sorted(unknown))}")
    data = ticket.model_dump()
    citizen = dict(data["citizen"])
    for key, value in edits.items():
        if key.startswith("citizen_"):
            citizen[key.removeprefix("citizen_")] = value
        else:
            data[key] = value
    data["citizen"] = citizen
    return Ticket.model_validate(data)


def mask_phone(phone: str | None) -> str:
    """For logs: a number nobody can dial back from the log.

    Long numbers (11 digits and more: mobiles, numbers with a country code) keep their first three
    characters and last four digits (`138****5678`, `+86*******5678`). Shorter ones (landlines,
    extensions, short codes) keep only their last digits, at most four and at most half of them
    (`****2198` for an 8-digit landline), so at least half of a short number is always hidden.
    Characters that are not digits are kept as they are.
    """
    if not phone:
        return "-"
    positions = [index for index, char in enumerate(phone) if char.isdigit()]
    if len(positions) >= 11:
        shown = {index for index in positions if index < 3} | set(positions[-4:])
    else:
        tail = min(4, len(positions) // 2)
        shown = set(positions[len(positions) - tail :])
    return "".join(char if not char.isdigit() or index in shown else "*" for index, char in enumerate(phone))


# A ticket id is a ULID in Crockford's base 32 (`new_ticket_id`): anything else names no ticket,
# and must never reach a Redis key (`{id}:h` would read a ticket's history list as its hash).
_TICKET_ID = re.compile(r"[0-7][0-9A-HJKMNP-TV-Z]{25}")


def is_ticket_id(value: str) -> bool:
    return _TICKET_ID.fullmatch(value) is not None
