"""Each agent's journal: the news a seat is sent about the tickets it holds, kept in Redis by
stream position, so a seat that comes back (a refresh, a dropped network, another gateway process)
is sent what it missed from the last position it saw (its hello's `since`), not refetched by a
time window.

Journaled: what happens to a held ticket that the agent did not do (`JOURNALED`): the citizen's
messages, replies' delivery states, final transcript segments, triage's decisions and alerts, 督办
events, a ticket taken back, a call that ended. A partial transcript segment is not (the final one replaces
it), nor what answers the seat's own frames (`ack`, `ticket`) or offers (a closed seat's offers go
back to the queue). Each frame is sent with its position as `seq`; the seat keeps the last it saw.

A process journals for the seats connected to it and, for `seats.reconnect_grace` after one
dropped, for the tickets it held then (`AwaySeats`): what reaches the agent's tickets while its
page reloads is in the journal when it is back. News published while no process of the agent's
seat ran is on the tickets themselves (the welcome's `resumed`).

`seats.journal_length` bounds each journal (trimmed approximately, oldest first: a seat away
longer than that many frames gets a `gap`), `seats.journal_ttl` how long one outlives its agent's
last news.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError, ResponseError

from gateway.config import GatewayConfig
from gateway.errors import ServiceUnavailable
from gateway.keys import reply_text
from gateway.queue import TicketQueue
from gateway.web import seat_protocol as proto

log = logging.getLogger("gateway.seats")

JOURNALED: tuple[type[proto.ServerFrame], ...] = (
    proto.Revoked,
    proto.CallEnded,
    proto.Transcript,
    proto.MessageFrame,
    proto.Delivery,
    proto.TriagedFrame,
    proto.AlertFrame,
    proto.EscalatedFrame,
)


START = "0-0"  # the journal position before any frame


def journaled(frame: proto.ServerFrame) -> bool:
    """Whether `frame` goes into the agent's journal (see the module)."""
    if isinstance(frame, proto.Transcript):
        return frame.segment.final
    return isinstance(frame, JOURNALED)


def position(seq: str) -> tuple[int, int]:
    """A journal position (a stream id, `ms-n`) as what orders it."""
    millis, _, number = seq.partition("-")
    return int(millis), int(number or 0)


def after(seq: str, other: str) -> bool:
    """`seq` comes later in the journal than `other` (anything comes after nothing)."""
    return not other or position(seq) > position(other)


def with_seq(raw: str, seq: str) -> dict[str, Any]:
    """A journaled frame as the welcome's `missed` sends it: its fields and its position."""
    frame: dict[str, Any] = json.loads(raw)
    frame["seq"] = seq
    return frame


@dataclass(frozen=True, slots=True)
class Replay:
    """What a returning seat missed: the frames after its `since` (oldest first, each with its
    `seq`), the journal's position now, and whether older ones it missed were trimmed away."""

    missed: tuple[dict[str, Any], ...]
    seq: str
    gap: bool


class SeatJournal:
    """The journals of one ticket store's agents (see the module)."""

    def __init__(self, queue: TicketQueue) -> None:
        self._queue = queue

    @property
    def _config(self) -> GatewayConfig:
        return self._queue.live.current

    async def append(self, agent: str, frames: Sequence[proto.ServerFrame]) -> list[str]:
        """Journal `frames` for `agent`, in one round trip; their positions."""
        seats, key = self._config.seats, self._queue.keys.journal(agent)
        try:
            async with self._queue.redis.pipeline(transaction=False) as pipe:
                for frame in frames:
                    pipe.xadd(key, {"f": frame.serialize()}, maxlen=seats.journal_length, approximate=True)
                pipe.pexpire(key, int(seats.journal_ttl * 1000))
                *added, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("the seat journal is unavailable") from exc
        return [reply_text(seq) for seq in added]

    async def since(self, agent: str, since: str | None) -> Replay:
        """What `agent`'s seat missed after `since` (None: a seat with no past, nothing to replay)."""
        key, most = self._queue.keys.journal(agent), self._config.seats.journal_length
        try:
            # One transaction: a frame journaled in between would be both in `missed` and after `seq`.
            async with self._queue.redis.pipeline(transaction=True) as pipe:
                pipe.xinfo_stream(key)
                if since is not None:
                    pipe.xrevrange(key, "+", f"({since}", count=most + 1)  # the newest, newest first
                info, *found = await pipe.execute(raise_on_error=False)
        except (RedisError, OSError) as exc:
            raise ServiceUnavailable("the seat journal is unavailable") from exc
        for answer in (info, *found):
            if isinstance(answer, ResponseError) and not _no_journal(answer):
                raise ServiceUnavailable("the seat journal is unavailable") from answer
        if isinstance(info, ResponseError):  # no journal: never written, or gone with its ttl
            # Position 0: before anything, so a seat with nothing yet still has a `since` to send.
            return Replay((), since or START, since not in (None, START))
        now = reply_text(info["last-generated-id"])
        if since is None:
            return Replay((), now, False)
        entries = [(reply_text(seq), reply_text(fields[b"f"])) for seq, fields in reversed(found[0])]
        # Trimmed (or deleted) after `since`: frames it missed are no longer here.
        trimmed = after(reply_text(info.get("max-deleted-entry-id") or "0-0"), since)
        missed = tuple(with_seq(raw, seq) for seq, raw in entries[-most:])
        return Replay(missed, now, trimmed or len(entries) > most)


def _no_journal(error: ResponseError) -> bool:
    return "no such key" in str(error)


@dataclass(slots=True)
class AwaySeat:
    """A seat that dropped: the tickets it held, journaled for until `until` (loop time)."""

    held: frozenset[str]
    until: float


class AwaySeats:
    """The seats of this process that dropped within `reconnect_grace` (see the module)."""

    def __init__(self) -> None:
        self._seats: dict[str, AwaySeat] = {}

    def left(self, agent: str, held: Iterable[str], until: float) -> None:
        self._seats[agent] = AwaySeat(frozenset(held), until)

    def back(self, agent: str) -> None:
        """The agent logged in again (here or on another process): its seat journals from there."""
        self._seats.pop(agent, None)

    def holding(self, ticket_id: str, now: float) -> list[str]:
        """The away agents that held `ticket_id` when they dropped (forgetting those away too long)."""
        for agent in [agent for agent, seat in self._seats.items() if seat.until <= now]:
            del self._seats[agent]
        return [agent for agent, seat in self._seats.items() if ticket_id in seat.held]

    def held_by(self, agent: str, ticket_id: str, now: float) -> bool:
        seat = self._seats.get(agent)
        return seat is not None and seat.until > now and ticket_id in seat.held


class Lanes:
    """One lane per agent: its news frames are journaled, then sent, in the order they came. What
    comes while a lane writes waits and goes in its next write, all at once: one round trip for a
    burst, and a seat that reads too slowly fills its send queue as it would without a journal. At
    most `limit` frames wait per agent; beyond, the oldest are dropped (logged), as the journal is
    not answering and the seat would be dropped as too slow anyway."""

    def __init__(
        self,
        spawn: Callable[[Coroutine[Any, Any, None]], asyncio.Task[Any]],
        flush: Callable[[str, list[proto.ServerFrame]], Awaitable[None]],
        limit: int,
    ) -> None:
        self._spawn, self._flush, self._limit = spawn, flush, limit
        self._waiting: dict[str, list[proto.ServerFrame]] = {}
        self._writing: set[str] = set()

    def push(self, agent: str, frame: proto.ServerFrame) -> None:
        waiting = self._waiting.setdefault(agent, [])
        waiting.append(frame)
        if len(waiting) > self._limit:
            del waiting[: len(waiting) - self._limit]
            log.warning("seat %s: news dropped while its journal was not answering", agent)
        if agent not in self._writing:
            self._writing.add(agent)
            self._spawn(self._drain(agent))

    async def _drain(self, agent: str) -> None:
        try:
            while frames := self._waiting.pop(agent, None):
                await self._flush(agent, frames)
        finally:
            self._writing.discard(agent)


def seq_of(frame: proto.ServerFrame, seq: str) -> proto.ServerFrame:
    """The frame as sent, with its journal position."""
    return dataclasses.replace(frame, seq=seq)  # type: ignore[call-arg]  # every JOURNALED type has one
