"""From what a channel received to a draft Ticket: validation, normalization and routing.

Plain functions over plain data: no I/O. Every channel adapter (HTTP, SMS, WeChat, Telegram, voice)
builds an `IntakeRequest` and calls `to_ticket`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

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


class IntakeRequest(BaseModel):
    """What a channel hands us. `message_id` is the channel's own id: the idempotency key."""

    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    channel: Channel = "web"
    message_id: MessageId | None = None
    citizen: Citizen = Field(default_factory=Citizen)
    text: Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT_CHARS)]
    attachments: list[Attachment] = Field(default_factory=list, max_length=20)
    queue: Annotated[str, StringConstraints(max_length=32)] | None = None
    priority: int | None = Field(default=None, ge=0, le=MAX_PRIORITY)
    flags: list[Flag] = Field(default_factory=list, max_length=16)
    ivr_path: Annotated[str, StringConstraints(max_length=64, pattern=r"^[0-9*#]*$")] = ""


def parse_intake(body: bytes) -> IntakeRequest:
    """Validate a JSON body; every problem is reported with its field path."""
    try:
        return IntakeRequest.model_validate_json(body)
    except ValidationError as exc:
        fields = tuple(
            FieldError(format_path(tuple(item["loc"])) or "body", item["msg"]) for item in exc.errors(include_url=False)
        )
        raise InvalidRequest("the request body is not a valid intake", fields) from None


def route(request: IntakeRequest, config: GatewayConfig) -> tuple[str, int]:
    """Pick the queue and the priority: explicit queue, else the channel's, else the default.

    Priority is the highest of the queue's own, the request's, and what its flags imply
    (`urgent`, `enterprise`: the 政企通 priority line), so flagged tickets are offered first.
    """
    names = {queue.name for queue in config.queues}
    if request.queue is not None and request.queue not in names:
        raise InvalidRequest("unknown queue", (FieldError("queue", f"no queue named {request.queue!r}"),))
    queue = request.queue or config.routing.by_channel.get(request.channel) or config.routing.default_queue
    levels = [config.queue(queue).priority, request.priority or 0]
    levels += [config.routing.flag_priority.get(flag, 0) for flag in request.flags]
    return queue, min(max(levels), MAX_PRIORITY)


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
    message_id = request.message_id or idempotency_key or ticket_id
    queue, priority = route(request, config)
    try:
        return Ticket(
            id=ticket_id,
            channel=request.channel,
            message_id=message_id,
            citizen=request.citizen,
            received_at=now,
            text=request.text,
            attachments=tuple(request.attachments),
            ivr_path=request.ivr_path,
            queue=queue,
            priority=priority,
            flags=tuple(dict.fromkeys(request.flags)),
            status="queued",
        )
    except ValidationError as exc:
        fields = tuple(FieldError(format_path(tuple(e["loc"])), e["msg"]) for e in exc.errors(include_url=False))
        raise InvalidRequest("the request cannot become a ticket", fields) from None
