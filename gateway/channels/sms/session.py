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
- `Connection`: one TCP connection, whatever its wire (`Wire`: the codec's encoder and decoder):
  writes messages, matches responses to requests by sequence number, sends a request again after
  each response timeout as many times as the protocol tries.
- `Session`: the skeleton of a link (connect, log in, serve, read, keep alive, reconnect with
  back-off; the window, pacing and throttling of submits; handing over reassembled messages, and
  answering at once a part of a long message it handed over that comes again) with
  the protocol's differences as a few hooks: how it logs in, says goodbye, keeps the link alive,
  handles a message, answers a malformed one, sends a part, names what it reassembled.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import ClassVar, Generic, Literal, Protocol, TypeVar

from gateway.channels.sms.framing import SmsDecodeError
from gateway.channels.sms.link import (
    Concatenation,
    InboundSms,
    LinkCounters,
    LinkHealth,
    LinkState,
    OnMessage,
    OnReceipt,
    SmsRejected,
)
from gateway.channels.sms.text import Complete, HandedOver, Incomplete, PartKey, Reassembler, ReassemblyFull
from gateway.ticket import mask_phone

READ_SIZE = 64 * 1024  # bytes asked of the socket at once; the decoder holds one PDU beyond it


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


# ---------------------------------------------------------------------------------------------
# One TCP connection, whatever its wire

M = TypeVar("M")  # what travels: an SMPP PDU, a CMPP frame


class ConnectionLost(Exception):
    """The connection ended before the response came (the request may be sent again)."""


class NoResponse(Exception):
    """No response after every try."""


class LoginRefused(Exception):
    """The peer refused our credentials (an SMPP bind, a CMPP login)."""


class Wire(Protocol[M]):
    """What a connection needs of its protocol's codec; one per connection (it holds the decoder)."""

    def encode(self, message: M) -> bytes: ...

    def sequence_of(self, message: M) -> int: ...

    def name_of(self, message: M) -> str: ...  # for a line that says which request went unanswered

    def feed(self, data: bytes) -> None: ...

    def next_message(self) -> M | None:
        """The next whole message, None until one has arrived; the codec's SmsDecodeError for a
        malformed one."""


class Connection(Generic[M]):
    """A TCP connection to the peer: writes messages, matches responses to requests by sequence
    number, sends a request again (the same bytes) after each `response_timeout`, `tries` in all."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        wire: Wire[M],
        *,
        response_timeout: float,
        tries: int = 1,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.wire = wire
        self.closed = asyncio.Event()
        self.reason = ""
        self.last_received = asyncio.get_running_loop().time()
        self._timeout = response_timeout
        self._tries = tries
        self._pending: dict[int, tuple[Callable[[M], bool], asyncio.Future[M]]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def send(self, message: M) -> None:
        if not self.closed.is_set():
            self.writer.write(self.wire.encode(message))

    async def request(self, message: M, accepts: Callable[[M], bool] = lambda _: True) -> M:
        """Send `message`; the response `accepts` takes (same sequence number), ConnectionLost,
        or NoResponse."""
        if self.closed.is_set():
            raise ConnectionLost(self.reason)
        sequence = self.wire.sequence_of(message)
        future: asyncio.Future[M] = asyncio.get_running_loop().create_future()
        self._pending[sequence] = (accepts, future)
        self._idle.clear()
        data = self.wire.encode(message)
        try:
            for _ in range(self._tries):
                self.writer.write(data)
                await self.writer.drain()
                with contextlib.suppress(TimeoutError):
                    return await asyncio.wait_for(asyncio.shield(future), self._timeout)
            raise NoResponse(self._unanswered(message))
        except (ConnectionError, RuntimeError) as error:  # the transport closed under the write
            raise ConnectionLost(describe(error)) from None
        finally:
            self._pending.pop(sequence, None)
            if not self._pending:
                self._idle.set()

    def _unanswered(self, message: M) -> str:
        name = self.wire.name_of(message)
        if self._tries == 1:
            return f"no response to {name} in {self._timeout:g} s"
        return f"no response to {name} after {self._tries} tries, {self._timeout:g} s each"

    def resolve(self, message: M) -> bool:
        """Hand a response to its request; False when none awaits it (late, or not ours)."""
        entry = self._pending.get(self.wire.sequence_of(message))
        if entry is None or not entry[0](message) or entry[1].done():
            return False
        entry[1].set_result(message)
        return True

    async def first(self, peer: str, awaited: str) -> M:
        """The first message the peer sends (the answer to our login), read before serving."""
        while (message := self.wire.next_message()) is None:
            data = await self.reader.read(READ_SIZE)
            if not data:
                raise ConnectionLost(f"{peer} closed the connection before {awaited}")
            self.wire.feed(data)
        return message

    async def settled(self) -> None:
        """Until no request awaits its response."""
        await self._idle.wait()

    def close(self, reason: str) -> None:
        if self.closed.is_set():
            return
        self.reason = reason
        self.closed.set()
        self.writer.close()
        for _, future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(reason))


# ---------------------------------------------------------------------------------------------
# The link's skeleton

Outcome = Literal["ok", "again", "refused"]
"""How a delivery is answered: handed over; not taken now (the peer delivers it again); refused
for good (it is not a message we can read)."""


class Answer(Protocol):
    """A deliver PDU still to be answered, on the connection it came on."""

    def send(self, outcome: Outcome) -> None: ...


class Held(Protocol):
    """A part of a citizen's message as the reassembler holds it: the deliveries to answer, and what
    it held (`text.part_digest`)."""

    @property
    def answers(self) -> tuple[Answer, ...]: ...

    @property
    def digest(self) -> str: ...


P = TypeVar("P", bound=Held)


def concatenation_of(done: Complete[P] | Incomplete[P]) -> Concatenation | None:
    """A long message's concatenation: its key, and each present part's number and digest."""
    if done.key.total == 1:
        return None
    numbers = done.present if isinstance(done, Incomplete) else range(1, done.key.total + 1)
    return Concatenation(done.key, tuple(zip(numbers, (part.digest for part in done.parts), strict=True)))


class CommonSettings(Protocol):
    """The settings every SMS link has, under the same names (SmppSettings, CmppSettings)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def window(self) -> int: ...
    @property
    def send_rate(self) -> float: ...
    @property
    def response_timeout(self) -> float: ...
    @property
    def connect_timeout(self) -> float: ...
    @property
    def reconnect_min(self) -> float: ...
    @property
    def reconnect_max(self) -> float: ...
    @property
    def throttle_min(self) -> float: ...
    @property
    def throttle_max(self) -> float: ...
    @property
    def throttle_retries(self) -> int: ...
    @property
    def submit_wait(self) -> float: ...
    @property
    def reassembly_timeout(self) -> float: ...
    @property
    def max_pending_messages(self) -> int: ...
    @property
    def max_callbacks(self) -> int: ...
    @property
    def stop_timeout(self) -> float: ...


S = TypeVar("S", bound=CommonSettings)


class Session(ABC, Generic[S, M, P]):
    """An `SmsLink`'s skeleton: connect, log in, serve the connection (read, keep alive), reconnect
    with a jittered back-off; a refused login is `auth_failed`, logged once and retried only at the
    ceiling (`reconnect_max`: wrong credentials are an operator's to fix, and a peer may lock an
    account that hammers it). Submits wait for a bound link, take a place in the window and a slot
    of the pacer; a throttled one slows the whole link down. Reassembled messages are handed over,
    then their deliveries answered. The protocol fills in the hooks (abstract methods)."""

    PROTOCOL: ClassVar[str]  # "SMPP": the links' log lines and errors begin with it
    PEER: ClassVar[str]  # "the SMSC"
    LOGIN: ClassVar[str]  # what logging in is called: "bind"
    THROTTLED: ClassVar[str]  # what the peer's slow-down is called: "throttled"
    MAX_SEQUENCE: ClassVar[int]  # sequence numbers run 1 .. MAX_SEQUENCE, then 1 again

    def __init__(
        self,
        settings: S,
        on_message: OnMessage,
        on_receipt: OnReceipt,
        log: logging.Logger,
        *,
        merge: Callable[[P | None, P], P],
        whole: Callable[[Complete[P] | Incomplete[P]], InboundSms],
        keep_alive: float,
        tries: int = 1,
    ) -> None:
        self._settings = settings
        self._merged = merge  # a part that came again replaces the held copy, keeping both's answers
        self._message_of = whole  # the whole message (or what arrived of it)
        self._tries = tries  # sends of one request on a connection (CMPP's C; SMPP sends once)
        self._on_message = on_message
        self._on_receipt = on_receipt
        self._log = log
        self._keep_alive_interval = keep_alive
        self._sequences = itertools.count(1)
        self._refs = itertools.count(1)
        self._window = asyncio.Semaphore(settings.window)
        self._pacer = Pacer(settings.send_rate)
        self._reassembler: Reassembler[P] = Reassembler(
            timeout=settings.reassembly_timeout, max_pending=settings.max_pending_messages
        )
        self._parts_added = asyncio.Event()
        # Long messages taken lately: a part of one that comes again is answered at once.
        self._handed_over = HandedOver(settings.max_pending_messages)
        self._connection: Connection[M] | None = None
        self._stopping = asyncio.Event()
        self._status = LinkStatus(self.PROTOCOL, log)
        self._handover = Handover(self._status, log, limit=settings.max_callbacks, peer=self.PEER)

    # --- the hooks -------------------------------------------------------------------------

    @abstractmethod
    def _wire(self) -> Wire[M]:
        """A new connection's codec."""

    @abstractmethod
    async def _log_in(self, connection: Connection[M]) -> None:
        """Log in on a new connection; LoginRefused, ConnectionLost, the codec's error."""

    @abstractmethod
    def _logged_in(self) -> str:
        """The line that says where the link is logged in, and as whom."""

    @abstractmethod
    async def _keep_alive_request(self, connection: Connection[M]) -> None:
        """One keep-alive round trip (enquire_link, CMPP_ACTIVE_TEST)."""

    @abstractmethod
    async def _goodbye(self, connection: Connection[M]) -> None:
        """Leave the peer cleanly (unbind, CMPP_TERMINATE) and wait for its answer."""

    @abstractmethod
    def _handle(self, connection: Connection[M], message: M) -> None:
        """A whole message from the peer."""

    @abstractmethod
    def _answer_malformed(self, connection: Connection[M], error: SmsDecodeError) -> str:
        """Answer what could not be read as the protocol allows; what was done, for the log line."""

    # --- SmsLink -----------------------------------------------------------------------------

    def health(self) -> LinkHealth:
        return self._status.health()

    async def changed(self) -> LinkHealth:
        """Until the link's state (or last error) changes; the health then."""
        await self._status.changed()
        return self.health()

    async def run(self) -> None:
        expiry = asyncio.create_task(
            expire_parts(self._reassembler, self._parts_added, self._deliver_message),
            name=f"{self.PROTOCOL.lower()}-parts",
        )
        try:
            await self._connect_loop()
        finally:
            expiry.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await expiry
            self._status.set("down")

    async def stop(self) -> None:
        self._stopping.set()
        self._status.notify()
        connection = self._connection
        with contextlib.suppress(TimeoutError, ConnectionLost, NoResponse):
            async with asyncio.timeout(self._settings.stop_timeout):
                await self._handover.wait()  # their deliveries are answered before we leave
                if connection is not None:
                    await connection.settled()
                    await self._goodbye(connection)
        if connection is not None:
            connection.close("stopped")
        self._handover.cancel()

    # --- submitting ------------------------------------------------------------------------

    def _refuse_when_stopping(self) -> None:
        if self._stopping.is_set():
            raise SmsRejected(f"the {self.PROTOCOL} link is stopping", transient=True)

    async def _bound(self) -> Connection[M]:
        """The logged-in connection, waiting for one at most `submit_wait`."""
        try:
            async with asyncio.timeout(self._settings.submit_wait):
                while True:
                    self._refuse_when_stopping()
                    if self._connection is not None and not self._connection.closed.is_set():
                        return self._connection
                    await self._status.changed()
        except TimeoutError:
            raise SmsRejected(
                f"no {self.PROTOCOL} {self.LOGIN} within {self._settings.submit_wait:g} s", transient=True
            ) from None

    async def _in_window(self, send: Callable[[Connection[M]], Awaitable[str | None]], resend_tries: int) -> str:
        """Send one part (`send`: the peer's id for it, None when throttled, SmsRejected when
        refused, ConnectionLost to send it again on the next connection) in the window and the
        pace, until it is taken; the peer's id."""
        throttled = lost = 0
        while True:
            connection = await self._bound()
            async with self._window:
                await self._pace()
                try:
                    message_id = await send(connection)
                except ConnectionLost as error:
                    connection.close(str(error))  # a transport that failed under a write is done
                    lost += 1
                    if lost >= resend_tries:
                        raise SmsRejected(f"{self.PEER} did not answer the part {lost} times", transient=True) from None
                    continue  # the next connection sends it again
            if message_id is not None:
                self._status.counts["parts_out"] += 1
                return message_id
            throttled += 1
            await self._slow_down(throttled)

    async def _slow_down(self, throttled: int) -> None:
        """The peer said "throttled" `throttled` times in a row: every sender waits, then this one
        tries again (SmsRejected once that was too often)."""
        settings = self._settings
        self._status.counts["throttled"] += 1
        if throttled > settings.throttle_retries:
            raise SmsRejected(f"{self.THROTTLED} {throttled} times in a row", transient=True)
        delay = backoff(throttled, settings.throttle_min, settings.throttle_max)
        self._pacer.hold(now() + delay)  # every sender slows down, not only this one
        if await pause(self._stopping, delay):
            self._refuse_when_stopping()

    async def _pace(self) -> None:
        delay = self._pacer.reserve(now())
        if delay > 0:
            await asyncio.sleep(delay)

    # --- connecting ------------------------------------------------------------------------

    async def _connect_loop(self) -> None:
        settings = self._settings
        failures = 0
        while not self._stopping.is_set():
            try:
                connection = await self._open()
            except LoginRefused as error:
                self._status.refused(str(error), settings.reconnect_max)
                delay = settings.reconnect_max
            except (OSError, TimeoutError, SmsDecodeError, ConnectionLost) as error:
                failures += 1
                self._status.failed(f"{self.LOGIN} to {self.PEER} failed: {describe(error)}")
                delay = backoff(failures, settings.reconnect_min, settings.reconnect_max, jitter=0.5)
            else:
                if self._stopping.is_set():  # stop() came while logging in: it saw no connection
                    connection.close("stopped")
                    break
                failures = 0
                await self._serve(connection)
                delay = backoff(1, settings.reconnect_min, settings.reconnect_max, jitter=0.5)
            await pause(self._stopping, delay)

    async def _open(self) -> Connection[M]:
        settings = self._settings
        if self._status.state != "auth_failed":  # a refused account stays so until a login succeeds
            self._status.set("connecting")
        async with asyncio.timeout(settings.connect_timeout):
            reader, writer = await asyncio.open_connection(settings.host, settings.port)
            connection = Connection(
                reader, writer, self._wire(), response_timeout=settings.response_timeout, tries=self._tries
            )
            try:
                await self._log_in(connection)
            except BaseException:
                connection.close(f"{self.LOGIN} failed")
                raise
        return connection

    # --- serving a connection --------------------------------------------------------------

    async def _serve(self, connection: Connection[M]) -> None:
        self._status.counts["binds"] += 1
        self._connection = connection
        self._status.set("bound")
        self._log.info("%s: %s", self.PROTOCOL, self._logged_in())
        name = self.PROTOCOL.lower()
        tasks = [
            asyncio.create_task(self._read(connection), name=f"{name}-read"),
            asyncio.create_task(self._keep_alive(connection), name=f"{name}-keep-alive"),
        ]
        try:
            await connection.closed.wait()
        finally:
            connection.close("the session ended")
            self._connection = None
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if not self._stopping.is_set():
                self._status.failed(f"connection to {self.PEER} lost: {connection.reason}")

    async def _read(self, connection: Connection[M]) -> None:
        try:
            while True:
                self._drain(connection)  # first: what came with the login's answer
                if connection.closed.is_set():
                    return
                data = await connection.reader.read(READ_SIZE)
                if not data:
                    connection.close(f"{self.PEER} closed the connection")
                    return
                connection.last_received = now()
                connection.wire.feed(data)
        except OSError as error:
            connection.close(describe(error))

    def _drain(self, connection: Connection[M]) -> None:
        """Handle every whole message the decoder holds."""
        while not connection.closed.is_set():
            try:
                message = connection.wire.next_message()
            except SmsDecodeError as error:
                self._malformed(connection, error)
                continue
            if message is None:
                return
            self._handle(connection, message)

    def _malformed(self, connection: Connection[M], error: SmsDecodeError) -> None:
        self._status.counts["protocol_errors"] += 1
        done = self._answer_malformed(connection, error)
        self._log.warning("%s: malformed PDU from %s (%s): %s", self.PROTOCOL, self.PEER, error, done)
        if error.fatal:
            connection.close(f"framing lost: {error}")

    def _unexpected(self, what: str, done: str) -> None:
        """A request the peer has no business sending us."""
        self._status.counts["protocol_errors"] += 1
        self._log.warning("%s: unexpected %s from %s, %s", self.PROTOCOL, what, self.PEER, done)

    async def _keep_alive(self, connection: Connection[M]) -> None:
        interval = self._keep_alive_interval
        while not connection.closed.is_set():
            idle = now() - connection.last_received
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            try:
                await self._keep_alive_request(connection)
            except NoResponse as error:
                connection.close(str(error))
            except ConnectionLost:
                return

    # --- inbound ---------------------------------------------------------------------------

    def _busy(self, answer: Answer) -> bool:
        """Stopping, or as many callbacks running as allowed: answered "again" (the peer delivers
        it later)."""
        if self._stopping.is_set() or self._handover.full():
            answer.send("again")
            return True
        return False

    def _add_part(self, answer: Answer, source: str, what: str, locate: Callable[[], tuple[PartKey, int, P]]) -> None:
        """Hold a part of a message (`locate`: where it belongs, ValueError when it is not one we
        can read); hand the message over once whole."""
        try:
            key, seq, part = locate()
            held = self._reassembler.part(key, seq)
            if held is None and self._handed_over.holds(key, seq, part.digest):
                self._taken_before(answer, key, seq)
                return
            done = self._reassembler.add(key, seq, self._merged(held, part), now())
        except ReassemblyFull as error:
            self._log.warning("%s: %s", self.PROTOCOL, error)
            answer.send("again")
            return
        except ValueError as error:
            self._status.counts["protocol_errors"] += 1
            self._log.warning("%s: %s from %s refused: %s", self.PROTOCOL, what, mask_phone(source), error)
            answer.send("refused")
            return
        if done is None:
            self._parts_added.set()  # a new deadline, perhaps
        else:
            self._deliver_message(done)

    def _taken_before(self, answer: Answer, key: PartKey, seq: int) -> None:
        """A part of a message taken already came again (the answer to it was lost): answered."""
        self._log.info(
            "%s: part %d/%d of a message from %s taken before came again; answered",
            self.PROTOCOL,
            seq,
            key.total,
            mask_phone(key.source),
        )
        answer.send("ok")

    def _deliver_message(self, done: Complete[P] | Incomplete[P]) -> None:
        message = replace(self._message_of(done), concatenation=concatenation_of(done))
        if not message.complete:
            self._log.warning(
                "%s: message %s from %s handed over without parts %s (reassembly timeout)",
                self.PROTOCOL,
                message.message_id,
                mask_phone(message.source),
                ",".join(map(str, message.missing)),
            )
        answers = [answer for part in done.parts for answer in part.answers]

        async def take() -> None:
            await self._on_message(message)
            if message.concatenation is not None:  # taken: its parts are known from now on
                self._handed_over.add(done.key, message.concatenation.parts)

        self._hand_over(message.source, take, answers, "messages_in")

    def _hand_over(
        self, source: str, call: Callable[[], Awaitable[None]], answers: Sequence[Answer], counter: str
    ) -> None:
        """Run the callback; answer the deliveries once it returned ("ok") or raised ("again")."""

        def settle(ok: bool) -> None:
            for answer in answers:
                answer.send("ok" if ok else "again")

        self._handover.start(source, call, settle, counter)

    def _next_sequence(self) -> int:
        return (next(self._sequences) - 1) % self.MAX_SEQUENCE + 1


def now() -> float:
    return asyncio.get_running_loop().time()
