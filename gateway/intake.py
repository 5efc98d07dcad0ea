"""From what a channel received to a draft Ticket: validation, normalization and routing.

Plain functions over plain data: no I/O. Every channel adapter (HTTP, SMS, WeChat, Telegram, voice)
builds an `IntakeRequest` and calls `to_ticket`.

Citizen text ends up on an agent's terminal, so every free-text field of an intake is cleaned on the
way in (`clean_text`: line breaks become `\n`, tabs stay, every other control character and every
bidi override, embedding and isolate goes) and refused when nothing visible is left
(`has_visible_text`).
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Collection
from datetime import datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from gateway import jsonwire
from gateway.config import GatewayConfig, format_path
from gateway.errors import FieldError, Forbidden, InvalidRequest
from gateway.ticket import (
    MAX_PRIORITY,
    MAX_TEXT_CHARS,
    Attachment,
    Channel,
    Citizen,
    Flag,
    MessageId,
    Ticket,
    new_ticket_id,
)

# C0 controls but tab and line feed (carriage returns become line feeds first), DEL, C1 controls,
# the bidi embeddings/overrides (U+202A-U+202E) and isolates (U+2066-U+2069), and lone surrogates
# (they cannot be encoded, so a ticket holding one could not be stored).
_STRIPPED = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_LINE_BREAK = re.compile("\r\n?")
# Invisible: white space, format characters (zero-width space/joiners, BOM, soft hyphen, marks),
# combining marks with nothing to combine with, and the letters that are drawn as nothing.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Zs", "Zl", "Zp", "Mn", "Me"})
_BLANK_LETTERS = frozenset("\u115f\u1160\u3164\uffa0\u2800")


def clean_text(value: str) -> str:
    """`value` as it may reach an agent's screen: `\\r\\n` and lone `\\r` become `\\n`, tabs stay,
    other controls (escape sequences lose their ESC) and bidi controls are removed."""
    return _STRIPPED.sub("", _LINE_BREAK.sub("\n", value))


def has_visible_text(value: str) -> bool:
    """True when some character of `value` is drawn (stops at the first one: usually the first)."""
    return any(
        not char.isspace() and char not in _BLANK_LETTERS and unicodedata.category(char) not in _INVISIBLE_CATEGORIES
        for char in value
    )


def _cleaned(value: Any) -> Any:
    return clean_text(value) if isinstance(value, str) else value


def _visible(value: str) -> str:
    if not has_visible_text(value):
        raise ValueError("must contain visible text (control and invisible characters are not counted)")
    return value


_CLEANED = BeforeValidator(_cleaned)
_VISIBLE = AfterValidator(_visible)

# The free-text fields of an intake: cleaned, stripped, bounded, and not invisible.
IntakeText = Annotated[str, _CLEANED, StringConstraints(max_length=MAX_TEXT_CHARS, strip_whitespace=True), _VISIBLE]
IntakeName = Annotated[str, _CLEANED, StringConstraints(max_length=64, strip_whitespace=True), _VISIBLE]
IntakeShortText = Annotated[str, _CLEANED, StringConstraints(max_length=128, strip_whitespace=True), _VISIBLE]
IntakePath = Annotated[str, _CLEANED, StringConstraints(max_length=512, strip_whitespace=True), _VISIBLE]


class IntakeCitizen(Citizen):
    """The ticket's `Citizen` with its free-text fields cleaned (the phone is normalized there)."""

    wechat_openid: IntakeShortText | None = None
    name: IntakeName | None = None


class IntakeAttachment(Attachment):
    path: IntakePath | None = None
    media_id: IntakeShortText | None = None
    mime: IntakeShortText | None = None


class IntakeRequest(BaseModel):
    """What a channel hands us. `message_id` is the channel's own id: the idempotency key."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    channel: Channel = "web"
    message_id: MessageId | None = None
    citizen: IntakeCitizen = Field(default_factory=IntakeCitizen)
    text: IntakeText
    attachments: list[IntakeAttachment] = Field(default_factory=list, max_length=20)
    queue: Annotated[str, StringConstraints(max_length=32)] | None = None
    priority: int | None = Field(default=None, ge=0, le=MAX_PRIORITY)
    flags: list[Flag] = Field(default_factory=list, max_length=16)
    ivr_path: Annotated[str, StringConstraints(max_length=64, pattern=r"^[0-9*#]*$")] = ""

    @field_validator("queue")
    @classmethod
    def _known_queue(cls, value: str | None, info: ValidationInfo) -> str | None:
        # Checked here when the caller names the queues (parse_intake), so an unknown queue is
        # reported in the same 400 as every other problem; `route` checks again for the others.
        queues = (info.context or {}).get("queues")
        if value is not None and queues is not None and value not in queues:
            raise ValueError(f"no queue named {value!r}")
        return value


_MESSAGE_ID = TypeAdapter(MessageId)


def parse_intake(
    body: bytes, queues: Collection[str] | None = None, idempotency_key: str | None = None
) -> IntakeRequest:
    """Validate a JSON body (and the Idempotency-Key header, when given); every problem is reported
    at once, each with its field path. With `queues`, an unknown queue is one of those problems."""
    fields: list[FieldError] = []
    if idempotency_key is not None:
        fields += _header_problems("Idempotency-Key", _MESSAGE_ID, idempotency_key)
    if _too_deep(body):
        fields.append(FieldError("body", f"nested deeper than {jsonwire.MAX_DEPTH} levels"))
        raise InvalidRequest("the request body is not a valid intake", tuple(fields))
    try:
        request = IntakeRequest.model_validate_json(body, context={"queues": queues})
    except ValidationError as exc:
        fields += _field_errors(exc, default_path="body")
        raise InvalidRequest("the request body is not a valid intake", tuple(fields)) from None
    if fields:
        raise InvalidRequest("the request is not a valid intake", tuple(fields))
    return request


def _too_deep(body: bytes) -> bool:
    # Counting brackets first keeps the common case to two C-speed passes over the body.
    return body.count(b"[") + body.count(b"{") > jsonwire.MAX_DEPTH and jsonwire.depth(body) > jsonwire.MAX_DEPTH


def _header_problems(name: str, adapter: TypeAdapter[Any], value: str) -> list[FieldError]:
    try:
        adapter.validate_python(value)
    except ValidationError:
        return [FieldError(name, "must be 1 to 128 printable ASCII characters, without spaces")]
    return []


def _field_errors(exc: ValidationError, default_path: str = "") -> list[FieldError]:
    return [
        FieldError(format_path(tuple(error["loc"])) or default_path, error["msg"])
        for error in exc.errors(include_url=False)
    ]


def fingerprint(request: IntakeRequest) -> str:
    """What the request asks for, without its message id: the same idempotency key with another
    fingerprint is another request (409), not a retry. Computed from the validated, cleaned request,
    so a retry that only re-encodes its JSON (spacing, key order, escapes) has the same one."""
    canonical = request.model_dump_json(exclude={"message_id"}, exclude_defaults=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:32]


def route(request: IntakeRequest, config: GatewayConfig) -> tuple[str, int, tuple[str, ...]]:
    """Pick the queue, the priority and the flags.

    Flags: the request's, `enterprise` for a number on `[routing] enterprise_phones` (the 政企通
    line), then the chosen queue's own (`[[queues]] flags`). Queue: the explicit one, else the first
    flag's (`[routing] flag_queue`), else the channel's, else the default. Priority: the highest of
    the queue's own, the request's, and what the flags imply (`urgent`, `enterprise`: the 政企通
    priority line), so flagged tickets are offered first.
    """
    names = {queue.name for queue in config.queues}
    if request.queue is not None and request.queue not in names:
        raise InvalidRequest("unknown queue", (FieldError("queue", f"no queue named {request.queue!r}"),))
    routing = config.routing
    flags = list(request.flags)
    if request.citizen.phone and request.citizen.phone in routing.enterprise_phones:
        flags.append("enterprise")
    flagged = next((routing.flag_queue[flag] for flag in flags if flag in routing.flag_queue), None)
    queue = request.queue or flagged or routing.by_channel.get(request.channel) or routing.default_queue
    flags += config.queue(queue).flags
    levels = [config.queue(queue).priority, request.priority or 0]
    levels += [routing.flag_priority.get(flag, 0) for flag in flags]
    return queue, min(max(levels), MAX_PRIORITY), tuple(dict.fromkeys(flags))


def to_ticket(
    request: IntakeRequest,
    config: GatewayConfig,
    now: datetime,
    idempotency_key: str | None,
    allowed_channels: list[Channel] | None = None,
) -> Ticket:
    if allowed_channels is not None and request.channel not in allowed_channels:
        raise Forbidden(f"this client may not submit {request.channel} tickets")
    ticket_id = new_ticket_id(now)
    # No key from the channel: the ticket's own id is its message id, and the gateway's answer
    # names it, so a retry after a 503 can still be recognized (docs/http-api.md).
    message_id = request.message_id or idempotency_key or ticket_id
    queue, priority, flags = route(request, config)
    try:
        return Ticket(
            id=ticket_id,
            channel=request.channel,
            message_id=message_id,
            citizen=Citizen.model_validate(request.citizen.model_dump(exclude_unset=True)),
            received_at=now,
            text=request.text,
            attachments=tuple(Attachment.model_validate(a.model_dump(exclude_unset=True)) for a in request.attachments),
            ivr_path=request.ivr_path,
            queue=queue,
            priority=priority,
            flags=flags,
            status="queued",
        )
    except ValidationError as exc:
        raise InvalidRequest("the request cannot become a ticket", tuple(_field_errors(exc))) from None
