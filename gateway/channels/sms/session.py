"""What every SMS session (SMPP, CMPP) does the same way, whatever its wire: back-off, pacing, the
link's state and counters, and handing inbound messages to the adapter before answering the peer.

- `backoff`: the wait after failures in a row, doubling from `low` to `high`, jittered downwards so
  that many links restarting together do not reconnect in step (never above `high`).
- `Pacer`: at most `rate` sends per second; `hold` pushes every later send back (a peer that says
  "throttled" slows the whole link down, not only the one submit).
- `LinkStatus`: the health the link reports (state, last error, counters), one log line per refusal
  episode, and an awaitable change for what waits on a bound link.
- `Handover`: runs the adapter's callbacks beside the reading (a slow one never delays a response
  the session waits for), one source's in order, at most `limit` at once, and settles each delivery
  (answers the peer) only once its callback returned: ok, or not (the peer then redelivers).
- `expire_parts`: hands over, after the reassembly timeout, what arrived of long messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import TypeVar

from gateway.channels.sms.link import LinkCounters, LinkHealth, LinkState
from gateway.channels.sms.text import Incomplete, Reassembler


def backoff(
    attempt: int, low: float, high: float, *, jitter: float = 0.0, rand: Callable[[], float] = random.random
) -> float:
    """The wait after `attempt` failures in a row (1, 2, ...): `low`, doubling, at most `high`; with
    `jitter` j, a value drawn between (1 - j) and 1 times that (so `high` stays the ceiling)."""
    delay = float(min(low * 2 ** max(attempt - 1, 0), high))
    return delay * (1.0 - jitter * rand())


class Pacer:
    """At most `rate` sends per second: each send reserves the next free slot (pure: time in)."""

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate
        self._next = 0.0

    def reserve(self, now: float) -> float:
        """How long to wait before sending (0 when a slot is free now)."""
        slot = max(now, self._next)
        self._next = slot + self._interval
        return slot - now

    def hold(self, until: float) -> None:
        """No slot before `until` (the peer asked us to slow down)."""
        self._next = max(self._next, until)


class LinkStatus:
    """The link's health, its counters, and a change anyone can wait for."""

    def __init__(self, name: str, log: logging.Logger) -> None:
        self.name = name
        self.state: LinkState = "down"
        self.last_error: str | None = None
        self.counts: Counter[str] = Counter()
        self._log = log
        self._changed = asyncio.Event()

    def health(self) -> LinkHealth:
        return LinkHealth(self.state, self.last_error, LinkCounters(**self.counts))

    def set(self, state: LinkState) -> None:
        self.state = state
        if state == "bound":
            self.last_error = None
        self.notify()

    def refused(self, reason: str, retry_every: float) -> None:
        """The peer refused our credentials: one line per episode (not one per retry)."""
        if self.state != "auth_failed":
            self._log.error("%s: %s; retrying every %g s", self.name, reason, retry_every)
        self.last_error = reason
        self.set("auth_failed")

    def failed(self, reason: str) -> None:
        self._log.warning("%s: %s", self.name, reason)
        self.last_error = reason
        self.set("down")

    def notify(self) -> None:
        """Wake everything waiting for the link to change."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        await self._changed.wait()


async def pause(stopping: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds`, or less when `stopping` is set meanwhile; True when it was."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stopping.wait(), seconds)
    return stopping.is_set()


Settle = Callable[[bool], None]  # answers the peer: True the callback returned, False it raised


class Handover:
    """Runs callbacks beside the reading, chained per source, at most `limit` at once."""

    def __init__(self, status: LinkStatus, log: logging.Logger, *, limit: int, peer: str) -> None:
        self._status = status
        self._log = log
        self._limit = limit
        self._peer = peer  # for the log line: "the SMSC", "the ISMG"
        self._running: set[asyncio.Task[None]] = set()
        self._chains: dict[str, asyncio.Task[None]] = {}

    def full(self) -> bool:
        return len(self._running) >= self._limit

    def start(self, source: str, call: Callable[[], Awaitable[None]], settle: Settle, counter: str) -> None:
        """Run `call` after the previous one for `source`; settle once it returned (or raised)."""
        task = asyncio.create_task(self._run(self._chains.get(source), call, settle, counter))
        self._running.add(task)
        self._chains[source] = task

        def done(finished: asyncio.Task[None]) -> None:
            self._running.discard(finished)
            if self._chains.get(source) is finished:
                del self._chains[source]

        task.add_done_callback(done)

    async def _run(
        self, previous: asyncio.Task[None] | None, call: Callable[[], Awaitable[None]], settle: Settle, counter: str
    ) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        try:
            await call()
        except Exception as error:  # the adapter's failure: the peer is asked to deliver again
            self._status.counts["callback_errors"] += 1
            self._log.warning(
                "%s: the handler of an inbound message failed (%s); %s will redeliver",
                self._status.name,
                describe(error),
                self._peer,
            )
            settle(False)
            return
        self._status.counts[counter] += 1
        settle(True)

    async def wait(self) -> None:
        """Until the callbacks running now have returned."""
        if self._running:
            await asyncio.wait(set(self._running))

    def cancel(self) -> None:
        for task in list(self._running):
            task.cancel()


F = TypeVar("F")


async def expire_parts(
    reassembler: Reassembler[F], parts_added: asyncio.Event, deliver: Callable[[Incomplete[F]], None]
) -> None:
    """Forever: hand over what arrived of long messages once the reassembly timeout has passed.
    `parts_added` is set by whoever adds a part (it may start a new deadline)."""
    loop = asyncio.get_running_loop()
    while True:
        deadline = reassembler.next_deadline()
        parts_added.clear()
        if deadline is None:
            await parts_added.wait()
            continue
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(parts_added.wait(), max(deadline - loop.time(), 0))
        for incomplete in reassembler.expire(loop.time()):
            deliver(incomplete)


def describe(error: BaseException) -> str:
    """An exception in one line: its type, and its message when it has one."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
