"""Outbound: a channel's sender reads its reply outbox with a consumer group and hands each reply
to the channel's peer, recording every state in the ticket (its conversation and history) and
telling the holding seat (`delivery` frames through `hg:news`).

- The outbox (`hg:outbox:{channel}`) is bounded by refusal (the REPLY script), never trimmed: an
  entry leaves it only when its reply was taken by the peer or refused for good (SENT script:
  recorded, acknowledged and deleted in one step).
- A transient refusal (link down, throttled past the session's retries) is tried again after a
  back-off doubling from `retry_min` to `retry_max`: the entry stays pending meanwhile.
- A restart reads the consumer's pending entries first (id 0), and claims those another consumer
  left idle for `claim_idle` (a dead process). A reply whose state is already recorded is
  acknowledged without being sent again. The one window where a reply can go out twice: a crash
  after the peer answered the submit and before SENT ran (SMS cannot ask the peer whether it took
  it: at least once, as docs/channels.md says).
- Receipts: every part delivered -> `delivered`; a failed part -> `failed` with the peer's state.

`retry_delay` is the pure decision; `Sender` the adapter (Redis, the peer's submit).
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError, ResponseError

from gateway.errors import ServiceUnavailable
from gateway.keys import reply_text
from gateway.messages import ConversationNews, MalformedMessage, Reply
from gateway.queue.store import Recorded, SentReply, TicketQueue
from gateway.ticket import Channel

log = logging.getLogger("gateway.channels.outbound")

GROUP = "sender"
RECEIPT_TTL = 3 * 86400  # a peer's receipt comes within its validity period (SMS: 48-72 h)


class Refused(Exception):
    """The peer refused a reply; `transient`: trying again later may succeed."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class UnknownReceipt(ServiceUnavailable):
    """A receipt on a part no recorded reply has: the peer is asked to send it again later."""


# The channel's submit: a reply in, the peer's id of each part out (or Refused).
Submit = Callable[[Reply], Awaitable[tuple[str, ...]]]


def retry_delay(attempt: int, low: float, high: float) -> float:
    """Seconds before the `attempt`-th retry (1, 2, ...): doubling from `low`, at most `high`."""
    return min(high, low * 2.0 ** max(0, attempt - 1))


def consumer_name(channel: Channel) -> str:
    """One consumer per channel and host, the same after a restart (its pending entries are its
    own to read again); another host's are claimed once idle for `claim_idle`."""
    return f"{channel}@{socket.gethostname()}"


class Sender:
    """Delivers one channel's outbox (see the module)."""

    def __init__(
        self,
        queue: TicketQueue,
        channel: Channel,
        submit: Submit,
        *,
        batch: int = 16,
        retry_min: float = 1.0,
        retry_max: float = 60.0,
        claim_idle: float = 60.0,
        block: float = 1.0,
    ) -> None:
        self._queue = queue
        self._channel = channel
        self._submit = submit
        self._batch = batch
        self._retry = (retry_min, retry_max)
        self._claim_idle_ms = int(claim_idle * 1000)
        self._block_ms = int(block * 1000)
        self._consumer = consumer_name(channel)
        self._outbox = queue.keys.outbox(channel)

    async def run(self) -> None:
        """Until cancelled (a supervised loop's body)."""
        await self._ensure_group()
        await self._deliver_all(await self._read("0"))  # ours, left pending by a previous run
        while True:
            entries = await self._claim_idle() + await self._read(">")
            await self._deliver_all(entries)

    async def _ensure_group(self) -> None:
        try:
            await self._queue.redis.xgroup_create(self._outbox, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _read(self, start: str) -> list[tuple[Any, Any]]:
        block = None if start == "0" else self._block_ms
        found: Any = await self._queue.redis.xreadgroup(
            GROUP, self._consumer, {self._outbox: start}, count=self._batch, block=block
        )
        return list(found[0][1]) if found else []

    async def _claim_idle(self) -> list[tuple[Any, Any]]:
        result: Any = await self._queue.redis.xautoclaim(
            self._outbox, GROUP, self._consumer, self._claim_idle_ms, "0-0", count=self._batch
        )
        return [entry for entry in result[1] if entry[1]]  # deleted entries come back empty

    async def _deliver_all(self, entries: list[tuple[Any, Any]]) -> None:
        await asyncio.gather(*(self._deliver(reply_text(entry_id), fields) for entry_id, fields in entries))

    async def _deliver(self, reply_id: str, fields: Any) -> None:
        try:
            reply = Reply.parse(fields)
        except MalformedMessage as exc:
            log.warning("outbox %s: entry %s dropped: %s", self._channel, reply_id, exc.message)
            await self._queue.redis.xack(self._outbox, GROUP, reply_id)
            await self._queue.redis.xdel(self._outbox, reply_id)  # else it counts against the bound
            return
        attempt, page = 0, reply.kind == "page"
        while True:
            try:
                peer_ids = await self._submit(reply)
                sent = SentReply(self._channel, reply_id, reply.ticket, peer_ids, page=page)
            except Refused as refused:
                if refused.transient:
                    attempt += 1
                    delay = retry_delay(attempt, *self._retry)
                    log.warning("reply %s not sent (%s); again in %.1f s", reply_id, refused.reason, delay)
                    await asyncio.sleep(delay)
                    continue
                sent = SentReply(self._channel, reply_id, reply.ticket, reason=refused.reason, page=page)
            await self._record(sent)
            return

    async def _record(self, sent: SentReply) -> None:
        """The reply's state, recorded once; tried again while the store is out of reach (the
        peer took the reply: sending it again is what must not happen)."""
        attempt = 0
        while True:
            try:
                recorded = await self._queue.record_sent(sent, GROUP, RECEIPT_TTL)
                break
            except ServiceUnavailable:
                attempt += 1
                delay = retry_delay(attempt, *self._retry)
                log.warning(
                    "reply %s: its state is not recorded yet (store unavailable); again in %.1f s", sent.reply_id, delay
                )
                await asyncio.sleep(delay)
        await tell_seat(self._queue, recorded)

    async def on_receipt(self, peer_id: str, delivered: bool, reason: str) -> None:
        """A peer's receipt on a part; raises while it cannot be recorded, so the peer sends it
        again: the store out of reach, or the part not known yet (a receipt can overtake the
        record of its submit; one that never becomes known is given up by the peer)."""
        recorded = await self._queue.record_receipt(self._channel, peer_id, delivered, reason)
        if recorded.outcome == "unknown":
            raise UnknownReceipt(f"a receipt on {self._channel} part {peer_id}: no reply of ours has it (yet)")
        await tell_seat(self._queue, recorded)


async def tell_seat(queue: TicketQueue, recorded: Recorded) -> None:
    """A reply's new state for the seat holding its ticket (the ticket has it either way)."""
    if recorded.outcome != "ok" or recorded.message is None or not recorded.agent:
        return
    news = ConversationNews(recorded.ticket_id, recorded.agent, recorded.message)
    try:
        await queue.redis.publish(queue.keys.news, news.serialize())
    except (RedisError, OSError) as exc:
        log.warning("ticket %s: the seat was not told of a delivery (%s)", recorded.ticket_id, type(exc).__name__)
