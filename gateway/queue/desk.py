"""The one intake entry point: every contact, from any channel, becomes a stored, queued ticket here.

HTTP intake, the media workers (a caller's ticket, a callback), the core settling a dead worker's
calls, and every message channel to come hand their contact to `IntakeDesk.submit`:

1. a request from outside (`IntakeRequest`: HTTP, SMS, WeChat, Telegram) is validated and routed
   into a draft ticket (`gateway.intake.to_ticket`: the source may submit that channel, the queue
   and the priority by the one routing rule), and fingerprinted for idempotency;
   a draft built by the gateway itself (`Ticket`: voice) only has its channel checked;
2. the draft is written durably, once: idempotent on the channel's message id (in the source's
   own scope for API clients), queued, the dispatchers woken, and the ticket-created stream
   appended, all in one script (`gateway/queue/scripts.py`, INTAKE);
3. one log line says so, with the citizen's number masked.

When the store cannot answer, `IntakeUnavailable` carries the message id under which a retry is
safe: the write may yet have happened (Redis frozen, then resumed), and a retry with the same id
finds it instead of making a second ticket.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from gateway.config import ApiClientConfig, GatewayConfig, LiveConfig
from gateway.errors import Forbidden, QueueFull, ServiceUnavailable
from gateway.intake import IntakeRequest, fingerprint, to_ticket
from gateway.queue.store import TicketQueue
from gateway.ticket import Channel, Ticket, mask_phone, utcnow

log = logging.getLogger("gateway.intake")


@dataclass(frozen=True, slots=True)
class Source:
    """Who hands a contact in: the actor its history names, the scope its message ids are unique
    in (an API client's own; None: ids the gateway made, unique by construction), and the
    channels it may submit (None: any)."""

    actor: str
    client: str | None = None
    channels: frozenset[Channel] | None = None

    @classmethod
    def api_client(cls, client: ApiClientConfig) -> Source:
        return cls(f"client:{client.id}", client.id, frozenset(client.channels))

    @classmethod
    def worker(cls, worker_id: str) -> Source:
        return cls(f"worker:{worker_id}")

    @classmethod
    def system(cls) -> Source:
        """The core itself (a dead worker's callers settled into callbacks)."""
        return cls("system")


@dataclass(frozen=True, slots=True)
class Accepted:
    ticket_id: str  # the stored ticket's: an earlier one's when this was a repeat
    created: bool
    draft: Ticket  # what was handed in (its id is the stored one's only when created)


class IntakeUnavailable(ServiceUnavailable):
    """The store did not answer; a retry under `message_id` is safe (it finds what may be stored)."""

    def __init__(self, message: str, message_id: str) -> None:
        super().__init__(message)
        self.message_id = message_id


class IntakeDesk:
    def __init__(self, queue: TicketQueue, config: GatewayConfig | LiveConfig) -> None:
        self._queue = queue
        self._live = LiveConfig.of(config)

    async def submit(
        self,
        contact: IntakeRequest | Ticket,
        source: Source,
        idempotency_key: str | None = None,
        now: datetime | None = None,
    ) -> Accepted:
        """Validate, route and durably queue one contact (see the module's docstring)."""
        draft, print_ = self._draft(contact, source, idempotency_key, now or utcnow())
        try:
            result = await self._queue.intake(draft, source.actor, source.client, print_)
        except QueueFull:
            raise  # the store answered: nothing was written, and the caller knows why
        except ServiceUnavailable as exc:
            raise IntakeUnavailable(exc.message, draft.message_id) from exc
        log.info(
            "intake %s from %s (%s, %s) -> %s%s",
            result.ticket_id,
            source.actor,
            draft.channel,
            mask_phone(draft.citizen.phone),
            draft.queue,
            "" if result.created else " (duplicate)",
        )
        return Accepted(result.ticket_id, result.created, draft)

    def _draft(
        self, contact: IntakeRequest | Ticket, source: Source, idempotency_key: str | None, now: datetime
    ) -> tuple[Ticket, str]:
        allowed = list(source.channels) if source.channels is not None else None
        if isinstance(contact, IntakeRequest):
            return to_ticket(contact, self._live.current, now, idempotency_key, allowed), fingerprint(contact)
        if allowed is not None and contact.channel not in allowed:
            raise Forbidden(f"this source may not submit {contact.channel} tickets")
        return contact, ""
