"""The channel adapter contract: what every message channel (SMS here; WeChat and Telegram next)
hands the gateway, and the one way it becomes intake.

An adapter turns what its peer delivered into an `InboundMessage` and awaits `ChannelIntake.take`
before it acknowledges the peer: when `take` returns, the message is durably part of a ticket
(a new one, or the citizen's open conversation); when it raises, nothing was acknowledged and the
peer delivers again. Taking the same message twice is harmless: it is remembered under its
channel message id (`hg:idem:{channel}:{id}`), so a redelivery finds the ticket it became.

Channel ids that are fingerprints of the content (SMPP has no id for a citizen's message: see
docs/channels.md) would make a genuine repeat ("好的", twice) a duplicate for as long as the id
is remembered. Such ids are scoped in time instead (`remembered_ids`): the id with the number of
the `duplicate_window` it arrived in; a message is a redelivery when its fingerprint was taken in
the same window or the one before. So a redelivery is recognised up to one window after the
original (at least), and a genuine repeat is a message of its own after at most two windows.

The decisions are pure (`remembered_ids`, `intake_request`); `ChannelIntake` is the
adapter that runs them against the store.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime

from redis.exceptions import RedisError

from gateway.channels.followup_desk import FollowupDesk
from gateway.config import LiveConfig
from gateway.intake import IntakeRequest, clean_text, has_visible_text
from gateway.messages import ConversationNews
from gateway.queue.desk import IntakeDesk, Source
from gateway.queue.store import TicketQueue
from gateway.ticket import MAX_TEXT_CHARS, Channel, ConversationMessage, citizen_of, mask_phone

log = logging.getLogger("gateway.channels")

INCOMPLETE_FLAG = "incomplete"  # a message some of whose parts never came
TRUNCATED_FLAG = "truncated"  # a message longer than a ticket's text (255 SMS parts can be)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    """A citizen's message as a channel received it, whole."""

    channel: Channel
    identity: str  # who wrote, as the channel names them: a phone number (SMS), an openid (WeChat)
    text: str
    message_id: str  # the channel's id of the message: stable when the peer delivers it again
    received_at: datetime
    media: tuple[str, ...] = ()  # the channel's ids of attached media
    id_is_fingerprint: bool = False  # the id is a hash of the content (SMPP): scoped in time
    complete: bool = True  # False: parts of it never came (they are named in the log)


@dataclass(frozen=True, slots=True)
class Taken:
    ticket_id: str
    # "created", "joined", "answered" (a 回访's rating), "duplicate" or "empty" (nothing visible:
    # not ticketed)
    outcome: str


def remembered_ids(message: InboundMessage, duplicate_window: float) -> tuple[str, ...]:
    """The ids a message is remembered under: the first is written, every one is looked up.
    A peer's own id is itself; a fingerprint is scoped to its window and the one before."""
    if not message.id_is_fingerprint:
        return (message.message_id,)
    window = int(message.received_at.timestamp() // duplicate_window)
    return (f"{message.message_id}.{window}", f"{message.message_id}.{window - 1}")


def flags_of(message: InboundMessage) -> list[str]:
    flags = [] if message.complete else [INCOMPLETE_FLAG]
    return [*flags, TRUNCATED_FLAG] if len(message.text) > MAX_TEXT_CHARS else flags


def shown_text(message: InboundMessage) -> str:
    """The text as a ticket keeps it: cleaned for an agent's screen, cut to a ticket's length."""
    return clean_text(message.text)[:MAX_TEXT_CHARS].strip()


def intake_request(message: InboundMessage, message_id: str) -> IntakeRequest:
    return IntakeRequest.model_validate(
        {
            "channel": message.channel,
            "message_id": message_id,
            "citizen": citizen_of(message.channel, message.identity),
            "text": shown_text(message),
            "attachments": [{"kind": "file", "media_id": media} for media in message.media],
            "flags": flags_of(message),
        }
    )


def conversation_message(message: InboundMessage, message_id: str) -> ConversationMessage:
    return ConversationMessage(direction="in", id=message_id, at=message.received_at, text=shown_text(message))


class ChannelIntake:
    """Takes a channel's messages into tickets: the answer to a waiting 回访 question is recorded
    on its ticket (within `[followup] timeout`), a follow-up joins the citizen's open ticket on that
    channel (within `[conversations] window`), any other message becomes a ticket through the one
    intake entry point."""

    def __init__(self, desk: IntakeDesk, queue: TicketQueue, live: LiveConfig, duplicate_window: float) -> None:
        self._desk = desk
        self._queue = queue
        self._live = live
        self._duplicate_window = duplicate_window
        self._followups = FollowupDesk(queue)

    async def take(self, message: InboundMessage) -> Taken:
        """Durably part of a ticket when this returns (see the module); raises when it is not."""
        if not has_visible_text(shown_text(message)):
            log.info("%s message from %s holds no visible text; not ticketed", message.channel, self._who(message))
            return Taken("", "empty")
        ids = remembered_ids(message, self._duplicate_window)
        said = conversation_message(message, ids[0])
        actor = f"channel:{message.channel}"
        joined = await self._queue.join(message.channel, message.identity, said, ids, actor)
        if joined.outcome == "followup":
            answered = await self._followups.answer(
                joined.ticket_id, message.channel, message.identity, shown_text(message), message.received_at, ids
            )
            if answered in ("ok", "duplicate"):
                return Taken(joined.ticket_id, "answered" if answered == "ok" else "duplicate")
            # No question waits any more (recorded as unanswered meanwhile): an ordinary message.
            joined = await self._queue.join(message.channel, message.identity, said, ids, actor, followup=False)
        if joined.outcome == "duplicate":
            return Taken(joined.ticket_id, "duplicate")
        if joined.outcome == "joined":
            log.info("%s message from %s joined %s", message.channel, self._who(message), joined.ticket_id)
            if joined.agent:
                await self._tell_seat(ConversationNews(joined.ticket_id, joined.agent, said))
            return Taken(joined.ticket_id, "joined")
        source = Source(actor, None, frozenset({message.channel}))
        accepted = await self._desk.submit(intake_request(message, ids[0]), source, ids[0], message.received_at)
        return Taken(accepted.ticket_id, "created" if accepted.created else "duplicate")

    async def _tell_seat(self, news: ConversationNews) -> None:
        """Live news for the holding seat; the ticket has the message whether or not it arrives."""
        try:
            await self._queue.redis.publish(self._queue.keys.news, news.serialize())
        except (RedisError, OSError) as exc:
            log.warning("ticket %s: the seat was not told of its new message (%s)", news.ticket, type(exc).__name__)

    @staticmethod
    def _who(message: InboundMessage) -> str:
        return mask_phone(message.identity) if message.channel == "sms" else "a citizen"
