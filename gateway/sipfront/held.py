"""The calls the media workers already hold when Kamailio starts, put into its call-load table.

Kamailio's dispatcher (alg 10) counts a worker's load from load entries keyed by Call-ID: one per
call it dispatched, removed by that call's BYE. A Kamailio that starts (or restarts: `run` restarts
one that dies) has none, while the workers may still hold calls: their media never passed through
it, their in-dialog requests need no state. It would offer full workers more callers (measured: 8
calls up on 4 full workers, Kamailio SIGKILLed and restarted, and the next INVITE was answered 503
by three workers in turn, each marked down).

So after every start, while kamailio.cfg still answers callers 503 (`front=>routing` unset), the
gateway reads the workers' heartbeats and gives each worker one load entry per caller it holds:
Kamailio sends itself an INVITE per entry (tm.t_uac_start; route[HELD] in kamailio.cfg puts the
entry on the worker and confirms it). Then it counts the entries in `held=>HOST:PORT` and opens
routing.

Kamailio cannot know those calls' Call-IDs, so their entries are not keyed by them. A held call's
end is its BYE on a dialog Kamailio does not know: route[CALL_ENDS] removes one held entry of that
worker (once per Call-ID). The entries of a worker whose heartbeat lapsed, whose process changed
(restarted) or that holds no caller at all are dropped by `HeldCalls.watch`; a worker that still
has callers keeps its held entries until their BYEs, since its count cannot tell a held call from
one dispatched since.

A worker's load is therefore: the calls this Kamailio dispatched to it that have not ended, plus
the calls it held when this Kamailio started that have not ended.

`plan` and `gone` decide (pure); `HeldCalls` reads Redis and talks to Kamailio.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.exceptions import RedisError

from gateway.sipfront.kamailio import SipFrontError
from gateway.sipfront.status import WorkerRow, worker_rows

if TYPE_CHECKING:
    import redis.asyncio as aioredis

    from gateway.sipfront.rpc import FrontRpc, Target

log = logging.getLogger("gateway.sipfront")

ROUTING = ("front", "routing")  # kamailio.cfg's gate: 1 = callers are dispatched
HELD_TABLE = "held"  # worker HOST:PORT -> held load entries left
CONFIRM_TIMEOUT = 3.0  # s for Kamailio to confirm every held entry it was sent
POLL = 0.1  # s between looks while waiting for heartbeats or for Kamailio
RETRY = 1.0  # s before reading Redis again when it did not answer
SENDING = 8  # held entries requested from Kamailio at once (each is one kamcmd process)


@dataclass(frozen=True, slots=True)
class Beat:
    """What a worker's latest heartbeat says."""

    address: str  # HOST:PORT, as the dispatcher list names the worker
    pid: str
    callers: int
    beat_ms: int  # when it was written (Redis clock)
    alive: bool


def beats_by_address(rows: Iterable[WorkerRow], worker_timeout_ms: int) -> dict[str, Beat]:
    """The latest heartbeat per worker address (an old id at the same address is ignored)."""
    beats: dict[str, Beat] = {}
    for row in rows:
        address = row.info.get("sip", "")
        try:
            callers = int(row.info.get("callers", "0"))
        except ValueError:
            callers = 0
        beat = Beat(address, row.info.get("pid", ""), callers, row.expiry_ms - worker_timeout_ms, row.alive)
        if address and (address not in beats or beat.beat_ms > beats[address].beat_ms):
            beats[address] = beat
    return beats


def waiting_for(beats: Mapping[str, Beat], since_ms: int) -> list[str]:
    """Live workers whose heartbeat is older than `since_ms`: it may miss calls the previous
    Kamailio gave them just before it died."""
    return sorted(address for address, beat in beats.items() if beat.alive and beat.beat_ms < since_ms)


@dataclass(frozen=True, slots=True)
class Held:
    """The load entries one worker gets for the calls it held when Kamailio started."""

    address: str
    duid: str
    calls: int
    pid: str


def plan(beats: Mapping[str, Beat], targets: Sequence[Target]) -> list[Held]:
    """One entry per caller a live heartbeat counts, at most the worker's maxload.

    Workers Kamailio does not route to (switched off, down) come first: route[HELD] puts each entry
    on a worker with room before moving it, and the workers that take calls have all their room then.
    """
    held: list[tuple[bool, Held]] = []
    for target in targets:
        beat = beats.get(target.address)
        if beat is None or not beat.alive or beat.callers <= 0:
            continue
        calls = min(beat.callers, target.maxload) if target.maxload > 0 else beat.callers
        held.append((target.active, Held(target.address, target.duid, calls, beat.pid)))
    return [entry for _, entry in sorted(held, key=lambda pair: pair[0])]


def gone(held: Mapping[str, int], pids: Mapping[str, str], beats: Mapping[str, Beat]) -> list[str]:
    """Workers whose held entries all go now: no live heartbeat, another process at the address
    (restarted: the calls died with the old one), or no caller left at all."""
    dropped = []
    for address, left in held.items():
        if left <= 0:
            continue
        beat = beats.get(address)
        if beat is None or not beat.alive or beat.pid != pids.get(address, beat.pid) or beat.callers == 0:
            dropped.append(address)
    return sorted(dropped)


def entry_call_id(address: str, number: int) -> str:
    """The Call-ID of a worker's `number`th held entry (route[HELD_END] removes the highest first)."""
    return f"{number}.{address}@hg-held"


class HeldCalls:
    """After each Kamailio start: the held calls into its load, then routing on; then `watch`."""

    def __init__(
        self,
        rpc: FrontRpc,
        redis: aioredis.Redis,
        prefix: str,
        *,
        self_address: str,
        worker_timeout: float,
        heartbeat_interval: float,
    ) -> None:
        self.rpc = rpc
        self.redis = redis
        self.prefix = prefix
        self.self_address = self_address
        self.timeout_ms = int(worker_timeout * 1000)
        self.heartbeat_interval = heartbeat_interval
        self.routing = asyncio.Event()  # set once callers are dispatched after the latest start
        self.rebuilt_in = 0.0  # s from ready to routing, the last time
        self._pids: dict[str, str] = {}

    async def run(self) -> None:
        """The whole job after one start (a new start cancels it and runs it again)."""
        self.routing.clear()
        began = asyncio.get_running_loop().time()
        beats, targets = await self._snapshot()
        held = plan(beats, targets)
        try:
            await self._put(held)
        except SipFrontError as exc:
            # Kamailio died meanwhile (its restart runs this again) or is too busy to answer.
            log.error("could not put the workers' held calls into Kamailio's load: %s", exc)
        try:
            await self.rpc.set_item(*ROUTING, 1)
        except SipFrontError as exc:
            log.error("could not switch routing on in kamailio (callers get 503): %s", exc)
            return
        self.routing.set()
        self.rebuilt_in = asyncio.get_running_loop().time() - began
        total = sum(entry.calls for entry in held)
        log.info(
            "kamailio routes callers %.2f s after it started; %d call(s) held by %d worker(s) are in its load",
            self.rebuilt_in, total, len(held),
        )  # fmt: skip
        if held:
            await self.watch()

    async def _snapshot(self) -> tuple[dict[str, Beat], list[Target]]:
        """Heartbeats written after this start (or the latest, for a worker that does not beat
        within two intervals), and Kamailio's destinations. Redis or Kamailio not answering: try
        again (the front answers callers 503 meanwhile)."""
        while True:
            try:
                return await self._fresh_beats(), await self.rpc.dispatcher()
            except (RedisError, OSError, SipFrontError) as exc:
                log.warning("cannot rebuild the call load yet (callers get 503 meanwhile): %s", exc)
                await asyncio.sleep(RETRY)

    async def _fresh_beats(self) -> dict[str, Beat]:
        seconds, micros = await self.redis.time()
        since_ms = int(seconds) * 1000 + int(micros) // 1000
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 2 * self.heartbeat_interval + 0.5
        while True:
            beats = beats_by_address(await worker_rows(self.redis, self.prefix), self.timeout_ms)
            late = waiting_for(beats, since_ms)
            if not late:
                return beats
            if loop.time() >= deadline:
                log.warning("no fresh heartbeat from %s: their last one counts", ", ".join(late))
                return beats
            await asyncio.sleep(POLL)

    async def _put(self, held: list[Held]) -> None:
        """One confirmed load entry per held call, then the counts route[HELD_END] works from."""
        if not held:
            return
        requests = [(entry, number) for entry in held for number in range(1, entry.calls + 1)]
        sending = asyncio.Semaphore(SENDING)

        async def one(entry: Held, number: int) -> None:
            call_id = entry_call_id(entry.address, number)
            async with sending:
                await self._request("INVITE", "hg-held", entry.address, call_id, entry.duid)

        await asyncio.gather(*(one(entry, number) for entry, number in requests))
        await self._confirmed({entry.address: entry.calls for entry in held})
        for entry in held:
            self._pids[entry.address] = entry.pid
            await self.rpc.set_item(HELD_TABLE, entry.address, entry.calls)

    async def _request(self, method: str, user: str, address: str, call_id: str, duid: str = "") -> None:
        headers = {
            "From": f"<sip:sipfront@{self.self_address}>",
            "To": f"<sip:{user}@{self.self_address}>",
            "Call-ID": call_id,
            "CSeq": f"1 {method}",
            "X-HG-Worker": address,
        }
        if duid:
            headers["X-HG-Duid"] = duid
        await self.rpc.request(method, f"sip:{user}@{self.self_address}", headers)

    async def _confirmed(self, wanted: dict[str, int]) -> None:
        """Until Kamailio's load per worker shows the held entries (nothing else is dispatched yet)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + CONFIRM_TIMEOUT
        while True:
            loads = {target.address: target.load for target in await self.rpc.dispatcher()}
            short = {address: loads.get(address, 0) for address in wanted if loads.get(address, 0) < wanted[address]}
            if not short:
                return
            if loop.time() >= deadline:
                log.warning("kamailio confirmed fewer held calls than asked: %s of %s", short, wanted)
                return
            await asyncio.sleep(POLL)

    async def watch(self) -> None:
        """Drop the held entries of workers that went, until no held entry is left."""
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            try:
                # Heartbeats first: a call that ended before the beat was read has already taken
                # its entry off (its BYE passes Kamailio before the worker counts it gone).
                rows = await worker_rows(self.redis, self.prefix)
                held = await self.rpc.htable(HELD_TABLE)
            except (RedisError, OSError, SipFrontError) as exc:
                log.warning("cannot check the workers' held calls: %s", exc)
                continue
            if not any(left > 0 for left in held.values()):
                return
            for address in gone(held, self._pids, beats_by_address(rows, self.timeout_ms)):
                log.warning("worker %s no longer holds its calls from before the last kamailio start", address)
                with contextlib.suppress(SipFrontError):
                    await self._request("BYE", "hg-drop", address, f"drop.{address}@hg-held")
