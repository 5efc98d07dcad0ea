"""The supervisors' wallboard (issue #14, item 8): one shared computation per process, pushed to
every supervisor's websocket.

`Wallboard` is the process's service. Each tick (every second, sooner when nudged) it writes the
seats this process holds to Redis when they change (`Keys.seat_presence`: seats live in the process
their websocket reached, the wall needs all of them), beats this process's config version, and,
while any supervisor watches, reads the counters once, computes the board (`gateway.web.board`)
and, when it changed, hands the same frame to every subscriber. A second loop counts intake per
channel and hour from `hg:created` with its own consumer group, so intake itself is untouched.
Every counter lives in Redis: a restarted gateway shows the same day.

`/console/ws/wallboard` is the supervisors' socket: a supervisor's session cookie, from an origin
the console serves; it only receives (what it sends is ignored; a frame over 1 KiB closes it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import Any, TypeVar

import redis.asyncio as aioredis
from aiohttp import WSCloseCode, WSMsgType, web
from redis.exceptions import RedisError, ResponseError

from gateway import messages
from gateway.config import GatewayConfig, LiveConfig
from gateway.errors import Forbidden, ServiceUnavailable, Unauthorized
from gateway.keys import Keys, process_id, reply_text
from gateway.queue import TicketQueue
from gateway.queue.store import GROUP
from gateway.ticket import MAX_PRIORITY, utcnow
from gateway.web import board
from gateway.web.board import Counters, Presence, StreamFigures
from gateway.web.console import CONSOLE, allowed_origins, supervisor_session

log = logging.getLogger("gateway.wallboard")

TICK = 1.0  # the board is recomputed at least this often (and a change reaches the wall within 2 s)
# ... and at most this often: a nudge (an intake counted, a supervisor come) brings the next
# computation forward, but never closer than this to the last one: under 100 events/s the wall
# gets two frames a second, not one per event batch (each costs every supervisor's browser a redraw).
MIN_GAP = 0.5
PRESENCE_TTL = 30  # s: a seat whose process stopped refreshing it leaves the wall
REFRESH_EVERY = 10.0  # s: presence and the process's beat are renewed this often
INTAKE_GROUP = "wallboard"
INTAKE_BATCH = 200
ORPHAN_SWEEP = 60.0  # s: how often entries a dead reader left pending are taken over
ORPHAN_IDLE = 30_000  # ms: pending this long, an entry's reader is gone (counting takes milliseconds)
INTAKE_TTL = 35 * 86400  # s: as the day's queue counters
POOL = "_pool"  # the consumer holding tickets given back (gateway/queue/store.py)
CLOSE_SESSION_ENDED = 4001  # the supervisor's session expired or was logged out
MAX_INBOUND = 1024  # bytes: supervisors send nothing; anything big is not one of ours
# Delete a seat's presence only if this process wrote it (the seat may have moved to another).
_FORGET = "if redis.call('HGET', KEYS[1], 'host') == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def local_day(ms: int | None = None) -> str:
    """The gateway host's local day (the queue counters' too)."""
    moment = datetime.now() if ms is None else datetime.fromtimestamp(ms / 1000)
    return moment.astimezone().strftime("%Y%m%d")


def intake_slot(entry_id: str) -> tuple[str, str]:
    """The day and hour (local) a `hg:created` entry was written in, from its id."""
    moment = datetime.fromtimestamp(board.entry_ms(entry_id) / 1000).astimezone()
    return moment.strftime("%Y%m%d"), moment.strftime("%H")


class Subscription:
    """One supervisor's socket: the latest frame not yet sent (older ones are never needed)."""

    def __init__(self) -> None:
        self._frame: str | None = None
        self._ready = asyncio.Event()

    def offer(self, frame: str) -> None:
        self._frame = frame
        self._ready.set()

    async def next(self) -> str:
        await self._ready.wait()
        self._ready.clear()
        frame, self._frame = self._frame, None
        assert frame is not None
        return frame


class Wallboard:
    """The process's wallboard: presence, beats, intake counts, and the one shared computation."""

    def __init__(self, live: LiveConfig, queue: TicketQueue, seats: Callable[[], Mapping[str, str]]) -> None:
        self._live = live
        self._redis: aioredis.Redis = queue.redis
        self._queue = queue
        self.keys: Keys = queue.keys
        self._seats = seats  # agent -> state, of the seats connected to this process
        self.process = process_id()
        self._written: dict[str, Presence] = {}
        self._refreshed = 0.0
        self._beaten = 0  # the config version last written to `processes`
        self._subscribers: set[Subscription] = set()
        self.sockets: set[web.WebSocketResponse] = set()  # the supervisors' sockets served here
        self._nudge = asyncio.Event()
        self._board: dict[str, object] | None = None
        self._frame: str | None = None
        self.session_check = 30.0  # s: how often an open wall's session is checked again
        self.ticks = 0
        self.computations = 0  # one per tick with watchers, however many they are
        self.frames = 0  # boards that changed, each sent to every watcher

    @property
    def config(self) -> GatewayConfig:
        return self._live.current

    # --- supervisors ------------------------------------------------------------------------------

    def subscribe(self) -> Subscription:
        subscription = Subscription()
        self._subscribers.add(subscription)
        if self._frame is not None:
            subscription.offer(self._frame)
        self.nudge()
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscribers.discard(subscription)

    def nudge(self) -> None:
        """Something changed here: compute before the tick is over."""
        self._nudge.set()

    # --- the tick ---------------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._nudge.wait(), TICK)
                self._nudge.clear()
                started = time.monotonic()
                await self._tick()
                await asyncio.sleep(max(0.0, started + MIN_GAP - time.monotonic()))
        finally:
            await self._forget_all()

    async def _tick(self) -> None:
        self.ticks += 1
        try:
            await self._write_presence(now_ms())
            if self._subscribers:
                await self._compute()
        except (RedisError, OSError):
            log.warning("wallboard: redis unavailable")

    async def _write_presence(self, ms: int) -> None:
        held, changed, gone = board.presence_changes(self._written, self._seats(), ms)
        # Everything is written again every REFRESH_EVERY, and at once after a config reload.
        refresh = time.monotonic() - self._refreshed >= REFRESH_EVERY or self._beaten != self._live.version
        if not (changed or gone or refresh):
            return
        async with self._redis.pipeline(transaction=False) as pipe:
            for agent, presence in (held if refresh else changed).items():
                key = self.keys.seat_presence(agent)
                pipe.hset(key, mapping={"state": presence.state, "since": presence.since_ms, "host": self.process})
                pipe.expire(key, PRESENCE_TTL)
            for agent in gone:
                pipe.eval(_FORGET, 1, self.keys.seat_presence(agent), self.process)
            if refresh:
                pipe.hset(self.keys.processes, self.process, board.process_beat(self._live.version, ms))
            await pipe.execute()
        self._written = held
        if refresh:
            self._refreshed, self._beaten = time.monotonic(), self._live.version

    async def _forget_all(self) -> None:
        """A clean stop takes this process's seats and beat off the wall at once."""
        with contextlib.suppress(RedisError, OSError):
            async with self._redis.pipeline(transaction=False) as pipe:
                for agent in self._written:
                    pipe.eval(_FORGET, 1, self.keys.seat_presence(agent), self.process)
                pipe.hdel(self.keys.processes, self.process)
                await pipe.execute()
        self._written = {}

    async def _compute(self) -> None:
        self.computations += 1
        day = local_day()
        computed = board.board(self.config, await self.read_counters(day), day, utcnow())
        if computed == self._board:
            return
        self._board = computed
        self.frames += 1
        self._frame = json_dumps({"type": "board", "seq": self.computations, "at": now_ms(), **computed})
        for subscription in self._subscribers:
            subscription.offer(self._frame)

    # --- reading the counters ---------------------------------------------------------------------

    async def read_counters(self, day: str) -> Counters:
        streams = await self._stream_figures()
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.hgetall(self.keys.intake_hours(day))
            pipe.hgetall(self.keys.metrics)
            pipe.hgetall(self.keys.processes)
            pipe.xrevrange(self.keys.alerts, count=board.ALERTS_SHOWN)
            pipe.zrangebyscore(self.keys.clocks, "-inf", now_ms(), start=0, num=board.LATE_SHOWN)
            pipe.xrevrange(self.keys.surges, count=board.SURGES_SHOWN)
            pipe.xrevrange(self.keys.escalations, count=board.ESCALATIONS_SHOWN)
            for agent in self.config.agents:
                pipe.hgetall(self.keys.seat_presence(agent.id))
            intake, metrics, beats, alerts, late, surges, escalations, *seats = await pipe.execute()
        processes, stale = board.live_processes(_texts(beats), now_ms())
        if stale:
            await self._redis.hdel(self.keys.processes, *stale)
        return Counters(
            streams=streams,
            stats=await self._queue.stats(day),
            seats=_presences([agent.id for agent in self.config.agents], seats),
            intake=_texts(intake),
            metrics=_texts(metrics),
            processes=processes,
            alerts=_read(alerts, messages.Alerted),
            surges=_read(surges, messages.SurgeWarning),
            escalations=_read(escalations, messages.Escalated),
            late=tuple(ticket for ticket in await self._queue.documents([reply_text(t) for t in late]) if ticket),
        )

    async def _stream_figures(self) -> dict[str, list[StreamFigures]]:
        """Each queue's streams: lengths and pending counts in one round trip; where something
        waits, its oldest waiting entry (never delivered, or returned to the pool) in two more."""
        names = [(q.name, self.keys.stream(q.name, p)) for q in self.config.queues for p in range(MAX_PRIORITY + 1)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for _, stream in names:
                pipe.xlen(stream)
                pipe.xpending(stream, GROUP)
            replies = await pipe.execute(raise_on_error=False)
        counts = [_counts(replies[2 * i], replies[2 * i + 1]) for i in range(len(names))]
        waiting = [i for i, (length, pending, pooled) in enumerate(counts) if length - pending + pooled > 0]
        oldest = await self._oldest_waiting([names[i][1] for i in waiting], [counts[i][2] > 0 for i in waiting])
        oldest_of = dict(zip(waiting, oldest, strict=True))
        figures: dict[str, list[StreamFigures]] = {}
        for i, (queue, _) in enumerate(names):
            length, pending, pooled = counts[i]
            figures.setdefault(queue, []).append(StreamFigures(length, pending, pooled, oldest_of.get(i)))
        return figures

    async def _oldest_waiting(self, streams: list[str], pooled: list[bool]) -> list[int | None]:
        if not streams:
            return []
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream in streams:
                pipe.xinfo_groups(stream)
            groups = await pipe.execute(raise_on_error=False)
        async with self._redis.pipeline(transaction=False) as pipe:
            for stream, info, pool in zip(streams, groups, pooled, strict=True):
                pipe.xrange(stream, min=f"({_last_delivered(info)}", count=1)
                if pool:
                    pipe.xpending_range(stream, GROUP, min="-", max="+", count=1, consumername=POOL)
            replies = iter(await pipe.execute(raise_on_error=False))
        oldest: list[int | None] = []
        for pool in pooled:
            candidates = [_first_id(next(replies))] + ([_first_pending(next(replies))] if pool else [])
            times = [board.entry_ms(entry) for entry in candidates if entry]
            oldest.append(min(times) if times else None)
        return oldest

    # --- intake per channel and hour ----------------------------------------------------------------

    async def count_intake(self) -> None:
        """Count `hg:created` per channel and hour as entries come. Count and acknowledgement are
        one transaction, so an entry stays pending only if its reader died in between: every
        ORPHAN_SWEEP this reader takes such entries over (idle ORPHAN_IDLE) and counts them."""
        await self._ensure_intake_group()
        swept = -ORPHAN_SWEEP
        while True:
            if time.monotonic() - swept >= ORPHAN_SWEEP:
                await self._count_orphans()
                swept = time.monotonic()
            # Blocked well within the command timeout, which would otherwise end the read as a failure.
            block = int(min(TICK, self.config.redis.command_timeout / 2) * 1000)
            reply = await self._redis.xreadgroup(
                INTAKE_GROUP, self.process, {self.keys.created: ">"}, count=INTAKE_BATCH, block=max(block, 1)
            )
            entries = _entries(reply)
            if entries:
                await self._count(entries)
                self.nudge()

    async def _count_orphans(self) -> None:
        start = "0-0"
        while True:
            reply = await self._redis.xautoclaim(
                self.keys.created, INTAKE_GROUP, self.process, ORPHAN_IDLE, start_id=start, count=INTAKE_BATCH
            )
            entries = [(reply_text(entry_id), _texts(fields)) for entry_id, fields in reply[1] if fields is not None]
            if entries:
                await self._count(entries)
            start = reply_text(reply[0])
            if start == "0-0":
                return

    async def _ensure_intake_group(self) -> None:
        try:
            await self._redis.xgroup_create(self.keys.created, INTAKE_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def _count(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        oldest_day = (datetime.now() - timedelta(seconds=INTAKE_TTL)).astimezone().strftime("%Y%m%d")
        # One HINCRBY per channel and hour of the batch (not per entry): a burst of intake costs
        # the wall a few commands, not two per ticket.
        slots: Counter[tuple[str, str]] = Counter()
        for entry_id, fields in entries:
            day, hour = intake_slot(entry_id)
            if day >= oldest_day:  # older than any wall shows: acknowledged, not counted
                slots[(day, f"{fields.get('c', 'unknown')}:{hour}")] += 1
        async with self._redis.pipeline(transaction=True) as pipe:
            for (day, field), count in slots.items():
                pipe.hincrby(self.keys.intake_hours(day), field, count)
            for day in {day for day, _ in slots}:
                pipe.expire(self.keys.intake_hours(day), INTAKE_TTL)
            pipe.xack(self.keys.created, INTAKE_GROUP, *[entry_id for entry_id, _ in entries])
            await pipe.execute()


def json_dumps(body: Mapping[str, Any]) -> str:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


def _texts(raw: Any) -> dict[str, str]:
    if not isinstance(raw, dict):
        return {}
    return {reply_text(name): reply_text(value) for name, value in raw.items()}


def _entries(reply: Any) -> list[tuple[str, dict[str, str]]]:
    """XREADGROUP's reply (a list of [stream, entries]) as (entry id, fields) pairs."""
    return [(reply_text(entry_id), _texts(fields)) for _, found in reply or [] for entry_id, fields in found]


def _counts(length: Any, pending: Any) -> tuple[int, int, int]:
    """(entries, delivered, returned to the pool) of one stream; a missing stream or group: none."""
    if not isinstance(length, int) or not isinstance(pending, dict):
        return 0, 0, 0
    pooled = sum(int(c["pending"]) for c in pending.get("consumers") or [] if reply_text(c["name"]) == POOL)
    return length, int(pending.get("pending") or 0), pooled


M = TypeVar("M", messages.Alerted, messages.SurgeWarning, messages.Escalated)


def _read(reply: Any, kind: type[M]) -> tuple[M, ...]:
    """The messages of an XREVRANGE (each entry's field `m`); one that cannot be read is logged
    and left out."""
    found = []
    for _, raw in reply or []:
        try:
            found.append(kind.parse(_texts(raw).get("m", "")))
        except messages.MalformedMessage as exc:
            log.warning("wallboard: an entry of %s: %s; not shown", kind.__name__, exc.message)
    return tuple(found)


def _last_delivered(info: Any) -> str:
    if isinstance(info, list):
        for group in info:
            if reply_text(group.get("name", b"")) == GROUP:
                return reply_text(group.get("last-delivered-id", b"0-0"))
    return "0-0"


def _first_id(reply: Any) -> str | None:
    return reply_text(reply[0][0]) if isinstance(reply, list) and reply else None


def _first_pending(reply: Any) -> str | None:
    return reply_text(reply[0]["message_id"]) if isinstance(reply, list) and reply else None


def _presences(agents: list[str], replies: list[Any]) -> dict[str, Presence]:
    seats: dict[str, Presence] = {}
    for agent, reply in zip(agents, replies, strict=True):
        fields = _texts(reply)
        if fields.get("state") and fields.get("since", "").isdigit():
            seats[agent] = Presence(fields["state"], int(fields["since"]))
    return seats


# --- the supervisors' socket --------------------------------------------------------------------

WALLBOARD = web.AppKey("wallboard", Wallboard)


async def wallboard_socket(request: web.Request) -> web.WebSocketResponse:
    """A supervisor's wall: refused before the upgrade (403/401, JSON) unless the page is one of
    the console's and the cookie names a supervisor's session."""
    if request.headers.get("Origin") not in allowed_origins(request.app[CONSOLE].config()):
        raise Forbidden("the wallboard opens from the console's own page only")
    session = await supervisor_session(request)
    wall = request.app[WALLBOARD]
    socket_ = web.WebSocketResponse(heartbeat=30.0, max_msg_size=MAX_INBOUND, compress=False)
    await socket_.prepare(request)
    log.info("wallboard opened by supervisor %s", session.supervisor.id)
    subscription = wall.subscribe()
    sender = asyncio.create_task(_send_frames(request, socket_, subscription))
    wall.sockets.add(socket_)
    try:
        async for message in socket_:
            if message.type is WSMsgType.ERROR:
                break  # supervisors send nothing the wall reads; a close or an error ends it
    finally:
        wall.sockets.discard(socket_)
        wall.unsubscribe(subscription)
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sender
    return socket_


async def _send_frames(request: web.Request, socket_: web.WebSocketResponse, subscription: Subscription) -> None:
    """Each new frame, and every `session_check` seconds the session again: a supervisor logged out or
    expired loses the wall (closed 4001) within that time, not at the next reconnect."""
    with contextlib.suppress(ConnectionResetError):
        while not socket_.closed:
            try:
                frame = await asyncio.wait_for(subscription.next(), request.app[WALLBOARD].session_check)
            except TimeoutError:
                if not await _still_logged_in(request):
                    await socket_.close(code=CLOSE_SESSION_ENDED, message=b"session ended")
                continue
            await socket_.send_str(frame)


async def _still_logged_in(request: web.Request) -> bool:
    try:
        await supervisor_session(request)
    except (Unauthorized, Forbidden):
        return False
    except ServiceUnavailable:
        return True  # Redis away for a moment: the wall stays, its next check decides
    return True


async def _close_sockets(app: web.Application) -> None:
    """A stopping gateway closes the walls (going away: the pages reconnect to the next one)."""
    for socket_ in list(app[WALLBOARD].sockets):
        await socket_.close(code=WSCloseCode.GOING_AWAY, message=b"gateway stopping")


def add_wallboard(app: web.Application, wall: Wallboard) -> None:
    app[WALLBOARD] = wall
    app.on_shutdown.append(_close_sockets)
    app.router.add_get("/console/ws/wallboard", wallboard_socket)
