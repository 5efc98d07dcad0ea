"""督办 (issue #15, item 6): the escalation events of overdue clocks, each sent once.

Triage schedules a ticket when it amends it with clocks (in the amend's transaction): `hg:escalate`,
scored by when its first 督办 event could fall due (`deadlines.next_escalation`); SETTLE takes a
ticket it closes off. This loop, every `[triage] escalate_every` seconds, with the time from Redis:

- takes the tickets due, the longest due first, `escalate_batch` at a time (a full batch is
  followed by the next at once: they are all due);
- reads them with their histories in one round trip;
- decides for each (`deadlines.escalation_step`, pure): the events due by now that its history does
  not show as sent (a clock is met by the history, `MET_BY`), and when to look at it again;
- writes each ticket's in one script (ESCALATE): an `Escalated` entry on `hg:escalations` for the
  supervisors' wall, a history line (`triage`, `escalated`, with `clock` and `kind`) that the seat
  shows and the HTTP API lists, and the ticket scheduled again or, when nothing more can be owed,
  unscheduled.

Exactly once: the script checks the ticket's own record of what it was sent (the hash field
`escalated`) and writes an event and that record in the same step, so two loops (a core and a
`hotline-gateway triage` process, each runs one) that read the same ticket, or a loop that stopped
between its read and its write and runs again, send each event once. A closed or gone ticket is
sent nothing.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from redis.exceptions import RedisError

from gateway.config import GatewayConfig, LiveConfig
from gateway.errors import ServiceUnavailable
from gateway.messages import Escalated
from gateway.queue import TicketQueue
from gateway.shell.tasks import stop_if_cancelled
from gateway.ticket import Ticket
from gateway.triage.deadlines import clocks_of, escalation_step, sent_escalations
from gateway.triage.merge import OPEN

log = logging.getLogger("gateway.triage")

ESCALATIONS_MAXLEN = 10_000  # `hg:escalations`: the supervisors' recent 督办 events (MAXLEN ~)


class Escalator:
    """The 督办 loop of one process (`run`); any number may run, each event is sent once."""

    def __init__(self, live: LiveConfig, queue: TicketQueue) -> None:
        self._live = live
        self._queue = queue
        self.sent = 0  # events this loop wrote (another loop may have written the rest)

    @property
    def config(self) -> GatewayConfig:
        return self._live.current

    async def run(self) -> None:
        while True:
            try:
                await self.escalate_due(await self._queue.now())
            except (ServiceUnavailable, RedisError, OSError):
                stop_if_cancelled()  # redis-py may turn a cancellation into a connection error
                log.warning("escalation: redis unavailable; the tickets due are looked at next time")
            await asyncio.sleep(self.config.triage.escalate_every)  # the pace of the loop, not a wait for anything

    async def escalate_due(self, now: datetime) -> int:
        """Send every event due by `now` (Redis's time in service; any time in tests); how many
        this call wrote."""
        batch = self.config.triage.escalate_batch
        written = 0
        while True:
            ids = await self._queue.escalations_due(now, batch)
            if not ids:
                return written
            tickets = await self._queue.tickets(ids)
            for ticket_id, ticket in zip(ids, tickets, strict=True):
                written += await self.escalate(ticket_id, ticket, now)
            # Each ticket looked at left the due range (scheduled after `now`, or off): a batch
            # not full was the last one.
            if len(ids) < batch:
                return written

    async def _tell_seat(self, sent: list[Escalated]) -> None:
        """The events just sent, for the seat holding the ticket (Pub/Sub: a seat away gets them
        from its journal, as the process it left journals them; the history has them anyway)."""
        redis, channel = self._queue.redis, self._queue.keys.escalation_news
        for event in sent:
            await redis.publish(channel, event.serialize())

    async def escalate(self, ticket_id: str, ticket: Ticket | None, now: datetime) -> int:
        """One ticket's events due by `now` and not sent before; how many were written now."""
        if ticket is None or ticket.status not in OPEN:  # gone or closed: it owes nothing, off the schedule
            await self._queue.escalate(ticket_id, (), None, now, ESCALATIONS_MAXLEN)
            return 0
        clocks = clocks_of(ticket)
        step = escalation_step(clocks, frozenset(sent_escalations(ticket)), now, self.config.deadlines.calendar)
        due = {clock.name: clock.due for clock in clocks}
        events = [Escalated(ticket.id, ticket.queue, e.clock, e.kind, due[e.clock], e.at) for e in step.send]
        written = await self._queue.escalate(ticket.id, events, step.next_at, now, ESCALATIONS_MAXLEN)
        if written:
            log.info("escalation: ticket %s sent %s", ticket.id, ", ".join(written))
            await self._tell_seat([event for event in events if f"{event.clock}:{event.kind}" in written])
        self.sent += len(written)
        return len(written)
