"""Where the core and the media workers meet in Redis (they share no Python state).

- Workers announce themselves with a heartbeat (`hg:workers`, a sorted set of expiry times) and
  keep the set of tickets of their live calls (`hg:worker:{id}:tickets`).
- The core sends a worker commands through its inbox stream (`hg:worker:{id}:inbox`): "call this
  agent for that ticket" once a seat accepted a voice ticket.
- Workers tell seats about their calls through the control channel (`screen_pop`, `revoke`,
  `call_ended`), which every core process hears and the one holding the seat acts on. What crosses
  Redis is a typed message of `gateway.messages`; every key is built by `gateway.keys.Keys`.
- When a worker's heartbeat lapses, any core process settles its tickets (`settle_dead_workers`):
  waiting calls become `abandoned` with the recording so far, plus a callback ticket.
- A worker id belongs to one address at a time (`claim_id`, `claim`): workers on several hosts share
  this Redis, and two workers beating under one id would mix their calls and hide each other's death.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from gateway import messages
from gateway.errors import ConfigError, Conflict, FieldError, NotFound
from gateway.keys import Keys, reply_text
from gateway.queue import TicketQueue
from gateway.queue.desk import IntakeDesk, Source
from gateway.ticket import Attachment, Ticket, TranscriptSegment, utcnow
from gateway.voice.framestats import FrameStats
from gateway.voice.policy import callback_ticket
from gateway.voice.wav import repair_header

log = logging.getLogger("gateway.voice")

INBOX_MAXLEN = 1000
FRAMES_MAXLEN = 10_000
DEAD_MAXLEN = 1000


# An inbox entry's id and its command, or why it is none.
InboxEntry = tuple[str, messages.WorkerCommand | messages.MalformedMessage]


# A worker's first heartbeat, atomic: refused (the holder's address and host are returned, nothing
# written) while another worker beats under the same id from another address or another host.
# KEYS: workers zset, worker hash; ARGV: worker id, ttl ms, sip, host, then the hash's field/value pairs
_CLAIM = r"""
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = redis.call('ZSCORE', KEYS[1], ARGV[1])
if expiry and tonumber(expiry) > now then
  local held = redis.call('HMGET', KEYS[2], 'sip', 'host')
  if held[1] and (held[1] ~= ARGV[3] or (held[2] and held[2] ~= ARGV[4])) then
    return {held[1], held[2] or ''}
  end
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('HSET', KEYS[2], unpack(ARGV, 5))
return false
"""


def _where(sip: str, host: str) -> str:
    return f"{sip} on host {host}" if host else sip


def worker_id_in_use(worker_id: str, other: str, mine: str) -> ConfigError:
    hint = (
        "give each host its own prefix (`run` names its workers {prefix}w1, {prefix}w2 ...), or another "
        "`media-worker --id`; a worker that died frees its id once its heartbeat lapses"
    )
    return ConfigError(
        f"media worker id {worker_id!r} is in use by a live worker at {other} (this one: {mine})",
        (FieldError("voice.worker_id_prefix", hint),),
    )


def _process_gone(pid: str) -> bool:
    """Whether no process `pid` runs on this host (this process counts as gone: a restarted
    container may get its predecessor's pid)."""
    try:
        number = int(pid)
    except ValueError:
        return False
    if number == os.getpid():
        return True
    if number <= 0:
        return False
    try:
        os.kill(number, 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: it runs, as another user
        return False
    return False


@dataclass(frozen=True, slots=True)
class VoiceKeys:
    """Every key is in `gateway.keys.Keys` now; this remains only for gateway/sipfront/commands.py
    (`VoiceKeys(Keys(prefix)).dead_workers`) until it reads `Keys(prefix).dead_workers` itself."""

    keys: Any

    @property
    def dead_workers(self) -> str:
        return Keys(self.keys.prefix).dead_workers


class VoiceLink:
    def __init__(self, queue: TicketQueue) -> None:
        self.queue = queue
        self.desk = IntakeDesk(queue, queue.live)  # every ticket a call leaves enters here
        self.redis: aioredis.Redis = queue.redis
        self.keys = queue.keys

    # --- worker side -------------------------------------------------------------------------

    async def heartbeat(self, worker_id: str, ttl: float, info: dict[str, str]) -> None:
        seconds, micros = await self.redis.time()
        expiry = int(seconds) * 1000 + int(micros) // 1000 + int(ttl * 1000)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zadd(self.keys.workers, {worker_id: expiry})
            pipe.hset(self.keys.worker(worker_id), mapping=info)  # type: ignore[arg-type]
            await pipe.execute()

    async def claim_id(self, worker_id: str, sip: str, callback_priority: int, host: str | None = None) -> None:
        """Before a worker starts as `worker_id` at `sip` on `host` (this machine's name by default):
        its SIP not bound yet, no heartbeat written.

        Refuses (ConfigError) while another worker beats under this id from another address or
        another host (two hosts both left at 127.0.0.1:5070 have the same address). A predecessor
        at this same address on this host whose process is gone (killed and restarted before its
        heartbeat lapsed) is settled now, like any dead worker: once the new worker beats, its death
        would no longer show, and its calls would never be settled nor ended through the front.
        """
        host = host or socket.gethostname()
        info = {
            reply_text(k): reply_text(v) for k, v in (await self.redis.hgetall(self.keys.worker(worker_id))).items()
        }
        expiry = await self.redis.zscore(self.keys.workers, worker_id)
        if expiry is None:
            return
        seconds, micros = await self.redis.time()
        alive = float(expiry) > int(seconds) * 1000 + int(micros) // 1000
        other, other_host = info.get("sip", ""), info.get("host", "")
        if alive and other and (other != sip or (other_host and other_host != host)):
            raise worker_id_in_use(worker_id, _where(other, other_host), _where(sip, host))
        if alive and other == sip and other_host == host and _process_gone(info.get("pid", "")):
            log.warning("media worker %s: its previous process %s is gone; settling its calls", worker_id, info["pid"])
            await self.redis.zadd(self.keys.workers, {worker_id: 0})
        await self.settle_dead_workers(callback_priority, only=worker_id)

    async def claim(self, worker_id: str, ttl: float, info: dict[str, str]) -> None:
        """The first heartbeat (`info` has `sip` and `host`), atomic: two workers starting at once
        under one id from different places cannot both pass `claim_id`'s look; the second is refused."""
        fields = [item for pair in info.items() for item in pair]
        args = [worker_id, str(int(ttl * 1000)), info["sip"], info.get("host", ""), *fields]
        held: Any = await self.redis.eval(_CLAIM, 2, self.keys.workers, self.keys.worker(worker_id), *args)
        if held:
            other, other_host = (reply_text(value) for value in held)
            raise worker_id_in_use(worker_id, _where(other, other_host), _where(info["sip"], info.get("host", "")))

    async def retire(self, worker_id: str) -> None:
        """A clean exit: the worker settled its calls itself."""
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self.keys.workers, worker_id)
            pipe.delete(self.keys.worker(worker_id), self.keys.worker_tickets(worker_id))
            await pipe.execute()

    async def track(self, worker_id: str, ticket_id: str) -> None:
        await self.redis.sadd(self.keys.worker_tickets(worker_id), ticket_id)

    async def untrack(self, worker_id: str, ticket_id: str) -> None:
        await self.redis.srem(self.keys.worker_tickets(worker_id), ticket_id)

    async def read_inbox(self, worker_id: str, last_id: str, block_ms: int) -> list[InboxEntry]:
        """The worker's commands after entry `last_id` (waiting up to `block_ms` for one), each with
        its entry id; an entry that is no command comes as the error saying why, to log and skip."""
        found: Any = await self.redis.xread({self.keys.inbox(worker_id): last_id}, count=50, block=block_ms)
        commands: list[InboxEntry] = []
        for _, entries in found or []:
            for entry_id, fields in entries:
                try:
                    command: messages.WorkerCommand | messages.MalformedMessage = messages.parse_worker_command(fields)
                except messages.MalformedMessage as exc:
                    command = exc
                commands.append((reply_text(entry_id), command))
        return commands

    async def tell_seat(self, kind: messages.CallEventKind, agent: str, ticket_id: str, reason: str = "") -> None:
        """News of a call for the seat holding its ticket, on whichever core process it is."""
        event = messages.call_event(kind, agent, ticket_id, reason)
        await self.redis.publish(self.keys.control, event.serialize())

    async def count(self, **increments: int) -> None:
        """Counters for the metrics endpoint (`hg:metrics`): calls, abandons, ratings, waits."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for name, amount in increments.items():
                pipe.hincrby(self.keys.metrics, name.replace("__", "."), amount)
            await pipe.execute()

    async def frame_stats(self, call_id: str, stats: FrameStats) -> None:
        """Per call: how the live-audio handoff kept up (frames, drops, gaps between frames)."""
        gaps = sorted(stats.gaps)

        def ms(fraction: float) -> str:
            return f"{gaps[min(len(gaps) - 1, int(fraction * len(gaps)))] * 1000:.2f}" if gaps else "0"

        fields = {
            "call": call_id,
            "frames": str(stats.frames),
            "dropped": str(stats.dropped),
            "gap_p50_ms": ms(0.5),
            "gap_p99_ms": ms(0.99),
            "gap_max_ms": f"{stats.max_gap * 1000:.2f}",
        }
        await self.redis.xadd(self.keys.frames, fields, maxlen=FRAMES_MAXLEN, approximate=True)  # type: ignore[arg-type]

    async def publish_transcript(self, ticket_id: str, segment: TranscriptSegment) -> None:
        await self.redis.publish(self.keys.transcripts, messages.Transcript(ticket_id, segment).serialize())

    async def add_pending(self, ticket_id: str, recording: Path, reason: str) -> None:
        """A recording that live recognition missed, for `hotline-gateway transcribe --pending`."""
        entry = json.dumps({"ticket": ticket_id, "path": str(recording), "reason": reason})
        await self.redis.zadd(self.keys.pending, {entry: time.time()})

    async def pending(self, limit: int = 100) -> list[tuple[str, dict[str, str]]]:
        """(member, entry) of the oldest recordings waiting to be transcribed."""
        members = await self.redis.zrange(self.keys.pending, 0, limit - 1)
        return [(reply_text(raw), json.loads(reply_text(raw))) for raw in members]

    async def done_pending(self, member: str) -> None:
        await self.redis.zrem(self.keys.pending, member)

    async def count_field(self, field: str, amount: int = 1) -> None:
        await self.redis.hincrby(self.keys.metrics, field, amount)

    # --- core side ---------------------------------------------------------------------------

    async def connect_agent(self, ticket: Ticket, agent: str, sip_uri: str) -> None:
        """A seat accepted a voice ticket: ask the worker holding the caller to ring the agent."""
        assert ticket.voice is not None
        command = messages.ConnectAgent(ticket.id, agent, sip_uri)
        await self.redis.xadd(
            self.keys.inbox(ticket.voice.worker),
            command.serialize(),  # type: ignore[arg-type]
            maxlen=INBOX_MAXLEN,
            approximate=True,
        )

    async def live_workers(self) -> dict[str, dict[str, str]]:
        seconds, micros = await self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        ids = await self.redis.zrangebyscore(self.keys.workers, now_ms, "+inf")
        workers = {}
        for raw in ids:
            worker_id = reply_text(raw)
            info = await self.redis.hgetall(self.keys.worker(worker_id))
            workers[worker_id] = {reply_text(k): reply_text(v) for k, v in info.items()}
        return workers

    async def settle_dead_workers(self, callback_priority: int, only: str | None = None) -> int:
        """Settle the calls of every worker whose heartbeat lapsed (or of worker `only`, if it did);
        safe in any number of processes."""
        seconds, micros = await self.redis.time()
        now_ms = int(seconds) * 1000 + int(micros) // 1000
        settled = 0
        for raw in await self.redis.zrangebyscore(self.keys.workers, "-inf", now_ms):
            worker_id = reply_text(raw)
            if only is not None and worker_id != only:
                continue
            taken = await self.queue.take_expired(self.keys.workers, worker_id)
            if not taken:
                continue
            log.warning("media worker %s stopped answering; settling its calls", worker_id)
            members = await self.redis.smembers(self.keys.worker_tickets(worker_id))
            settled += await self.settle_calls([reply_text(m) for m in members], "worker_died", callback_priority)
            sip = await self.redis.hget(self.keys.worker(worker_id), "sip")
            # The SIP front ends the dead worker's dialogs (BYE to its callers and agent phones).
            await self.redis.xadd(
                self.keys.dead_workers,
                {"worker": worker_id, "sip": reply_text(sip or "")},
                maxlen=DEAD_MAXLEN,
                approximate=True,
            )
            await self.redis.delete(self.keys.worker_tickets(worker_id), self.keys.worker(worker_id))
        return settled

    async def settle_calls(self, ticket_ids: Iterable[str], reason: str, callback_priority: int) -> int:
        """The caller is gone without a goodbye: abandon waiting tickets and queue a callback."""
        settled = 0
        for ticket_id in ticket_ids:
            try:
                ticket = await self.queue.get(ticket_id)
            except NotFound:
                continue
            for attachment in ticket.attachments:
                if attachment.kind == "recording" and attachment.path:
                    repair_header(Path(attachment.path))
            if ticket.status in ("queued", "offered"):
                if await self._abandon(ticket, reason):
                    callback = callback_ticket(ticket, utcnow(), callback_priority, reason)
                    await self.desk.submit(callback, Source.system())
                    settled += 1
            elif ticket.status == "claimed" and ticket.agent:
                await self.tell_seat("call_ended", ticket.agent, ticket.id, reason)
                settled += 1
        return settled

    async def _abandon(self, ticket: Ticket, reason: str) -> bool:
        try:
            await self.queue.abandon(ticket.id, reason)
        except (Conflict, NotFound):
            return False
        if ticket.agent:
            await self.tell_seat("revoke", ticket.agent, ticket.id, reason)
        return True


def recording_attachment(path: Path, seconds: float | None = None) -> Attachment:
    return Attachment(kind="recording", path=str(path), mime="audio/wav", seconds=seconds)
