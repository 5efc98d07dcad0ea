"""回访's adapter: the decisions of `gateway/channels/followup.py` run against the ticket store.

- `plan`: what a submit does for the 回访 (the seat's `submit` hands it to the SETTLE script, which
  queues the answer in the channel's outbox, where the channel's sender delivers it like a reply).
- `answer`: a citizen's message that JOIN found to be the answer to a waiting question, recorded
  (FOLLOWUP script: the rating, the history, 不满意 reopening the ticket), once.
- `expire`: the reaper step (the core's `reaper` loop) recording the questions unanswered after
  `[followup] timeout`.

Both records are guarded by the ticket's document as read (a change in between makes the script
refuse, and the decision is made again on the ticket as it is now).
"""

from __future__ import annotations

import logging
from datetime import datetime

from gateway.channels import followup
from gateway.config import GatewayConfig
from gateway.errors import Conflict, NotFound
from gateway.queue.store import FollowupPlan, FollowupRecord, TicketQueue, history_json
from gateway.ticket import CHANNELS, Channel, Citizen, Ticket, citizen_of

log = logging.getLogger("gateway.channels.followup")

ATTEMPTS = 8  # reads of a ticket that keeps changing under a record before giving up (Conflict)
COMMENT_CHARS = 500  # of a citizen's comment, as the history keeps it


def enabled_channels(config: GatewayConfig) -> frozenset[Channel]:
    """The message channels with a sender in this deployment."""
    channels = config.channels
    on = {"sms": channels.sms.enabled, "wechat": channels.wechat.enabled, "telegram": channels.telegram.enabled}
    return frozenset(channel for channel in CHANNELS if on.get(channel))


class FollowupDesk:
    """The 回访 of one ticket store (see the module); holds nothing of its own."""

    def __init__(self, queue: TicketQueue) -> None:
        self._queue = queue

    @property
    def _config(self) -> GatewayConfig:
        return self._queue.live.current

    @property
    def enabled(self) -> bool:
        return self._config.followup.enabled

    def plan(self, ticket: Ticket) -> FollowupPlan | None:
        """What submitting `ticket` does for its 回访; None when there is none (no answer written,
        or `[followup]` disabled)."""
        config = self._config
        if not ticket.answer or not config.followup.enabled:
            return None
        where = followup.route(ticket, enabled_channels(config))
        if where.channel is None:
            return FollowupPlan(None, reason=where.reason)
        citizen = Citizen.model_validate(citizen_of(where.channel, where.identity))
        text = followup.question(ticket.answer)
        return FollowupPlan(where.channel, where.identity, citizen, text, timeout=config.followup.timeout)

    async def answer(
        self, ticket_id: str, channel: Channel, identity: str, text: str, at: datetime, remembered: tuple[str, ...]
    ) -> str:
        """The citizen's message `text` as the answer to `ticket_id`'s question: 'ok', 'duplicate'
        (taken before), or 'closed' / 'not_found' (no question waits: the message is an ordinary one)."""
        outcome = followup.outcome_of(text)
        actor = f"channel:{channel}"
        for _ in range(ATTEMPTS):
            try:
                ticket, doc = await self._queue.get_stored(ticket_id)
            except NotFound:
                return "not_found"
            reopen = ""
            if outcome == "unsatisfied":
                reopen = history_json("system", "reopened", at, reason="followup_unsatisfied", answer=ticket.answer)
            record = FollowupRecord(
                after=followup.answered(ticket, outcome),
                entry=history_json(actor, "followup_answered", at, rating=outcome, text=text[:COMMENT_CHARS]),
                identity_key=self._queue.keys.followup(channel, identity),
                reopen_entry=reopen,
                remembered=remembered,
                channel=channel,
                at=at,
            )
            result = await self._queue.record_followup(ticket_id, doc, record)
            if result != "changed":
                if result == "ok":
                    log.info("ticket %s: 回访 answered (%s)%s", ticket_id, outcome, "; reopened" if reopen else "")
                return result
        raise Conflict(f"ticket {ticket_id} kept changing; its 回访 answer was not recorded (the peer sends it again)")

    async def expire(self, now: datetime, batch: int = 200) -> int:
        """Record the questions asked more than `[followup] timeout` before `now` as unanswered;
        how many were recorded."""
        before = followup.overdue_before(now, self._config.followup.timeout)
        recorded = 0
        for ticket_id in await self._queue.asked_before(before, batch):
            recorded += await self._unanswered(ticket_id, now) == "ok"
        return recorded

    async def _unanswered(self, ticket_id: str, now: datetime) -> str:
        for _ in range(ATTEMPTS):
            try:
                ticket, doc = await self._queue.get_stored(ticket_id)
            except NotFound:
                await self._queue.forget_followup(ticket_id)
                return "not_found"
            where = followup.route(ticket, enabled_channels(self._config))
            record = FollowupRecord(
                after=followup.unanswered(ticket),
                entry=history_json("system", "followup_unanswered", now),
                identity_key=self._queue.keys.followup(where.channel, where.identity) if where.channel else "",
                at=now,
            )
            result = await self._queue.record_followup(ticket_id, doc, record)
            if result != "changed":
                return result
        return "changed"  # tried again on the next pass
