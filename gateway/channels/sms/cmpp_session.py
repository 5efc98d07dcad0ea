"""The CMPP 3.0 session: `CmppLink`, an `SmsLink` over asyncio streams to a carrier's ISMG.

A thin shell over the codec (`cmpp.py`), the text core (`text.py`) and what every SMS session
shares (`session.py`: back-off, pacing, health, handing over). The decisions are pure functions at
the top of this module (what SUBMITs carry a reply, what a DELIVER's part is, what a reassembled
message says, which receipt a status report makes); the classes below only do I/O:

- `run()` connects (CMPP_CONNECT with the MD5 authenticator; the ISMG's own authenticator is
  checked), then serves the connection until it ends, then reconnects after a back-off that doubles
  from `reconnect_min` to `reconnect_max`, jittered. A refused login (Status 2, 3, ...) puts the health in
  `auth_failed`, is logged once, and is retried only at the ceiling: a wrong secret is an
  operator's to fix, and an ISMG may lock an account that hammers it.
- Keep-alive: after `active_test_interval` without a frame from the ISMG, a CMPP_ACTIVE_TEST; the
  ISMG's own are answered. Every request is retransmitted (the same bytes, the same Sequence_Id)
  after `response_timeout` without a response, `tries` times in all (the spec's T = 60 s, C = 3);
  an ACTIVE_TEST that gets no answer ends the connection.
- `submit()` splits a reply into UCS-2 parts (Msg_Fmt 8, TP_udhi and a concatenation UDH when
  long) and sends them inside a window of `window` SUBMITs awaiting their response, at most
  `send_rate` per second. Result 8 (flow control) slows the whole link down and resubmits after a
  back-off (`throttle_retries` times); a connection lost before the response resubmits on the next
  one (at least once: CMPP cannot ask whether the ISMG took it); any other Result is a permanent
  `SmsRejected`.
- Inbound DELIVERs: status reports go to `on_receipt`, messages (Msg_Fmt 0, 8, 15; long ones
  joined by their UDH in `text.Reassembler`) to `on_message`. A DELIVER is answered (its Msg_Id
  echoed, Result 0) only after the callback returned; when it raised, with Result 8, so the ISMG
  delivers it again later (the message keeps its Msg_Id, hence its `message_id`). The parts of a
  long message are all answered once the whole message (or what the reassembly timeout delivers)
  was handed over. Callbacks run beside the reading (a slow one never delays a SUBMIT_RESP), one
  source number's in order, at most `max_callbacks` at once: past that a DELIVER is answered
  Result 8 at once.
- `stop()` lets running callbacks and awaited responses finish, sends CMPP_TERMINATE, waits for
  its response: all within `stop_timeout`.

Bounds: the decoder holds at most one PDU (`cmpp.MAX_PDU_SIZE`) beyond a read of `READ_SIZE`; the
window bounds SUBMITs in flight; `max_callbacks` the DELIVERs being handed over (so the answers
waiting to be written too); the reassembler `max_pending_messages` long messages of at most 255
parts; a request waits for the transport's write buffer to drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TypeVar

from gateway.channels.sms import text
from gateway.channels.sms.cmpp import (
    VERSION,
    ActiveTest,
    ActiveTestResp,
    CmppDecodeError,
    Connect,
    ConnectResp,
    ConnectStatus,
    Decoder,
    Deliver,
    DeliverResp,
    Frame,
    MsgFmt,
    Pdu,
    Result,
    StatusReport,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
    authenticator_ismg,
    authenticator_source,
    command_name,
    encode,
    error_response,
    format_msg_id,
    timestamp_of,
)
from gateway.channels.sms.link import (
    InboundSms,
    LinkHealth,
    OnMessage,
    OnReceipt,
    OutboundSms,
    SmsRejected,
    Submitted,
)
from gateway.channels.sms.session import Handover, LinkStatus, Pacer, backoff, describe, expire_parts, pause
from gateway.channels.sms.text import Complete, Incomplete, PartKey, Reassembler, ReassemblyFull, Receipt
from gateway.ticket import mask_phone

log = logging.getLogger("gateway.sms.cmpp")

READ_SIZE = 64 * 1024
TEXT_CODINGS: dict[int, int] = {MsgFmt.ASCII: text.ASCII, MsgFmt.UCS2: text.UCS2, MsgFmt.GBK: text.GBK}
"""Msg_Fmt -> the text core's coding, for the formats a citizen's message comes in."""
MAX_ANSWERS_PER_PART = 4
"""Sequence_Ids kept per held part of a long message: a part the ISMG redelivers while the others
are awaited adds one (each is answered when the message is handed over); older ones are dropped."""


@dataclass(frozen=True, slots=True)
class CmppSettings:
    """Everything a CMPP link needs, built from `[channels.sms]` by the caller."""

    host: str
    port: int
    sp_id: str  # Source_Addr, Msg_src: the 6-digit SP id (企业代码)
    secret: str = field(repr=False)  # the shared secret; never logged
    service_id: str  # Service_Id (业务代码), at most 10 characters
    src_id: str  # Src_Id: the number citizens write to and see replies from (106353112345)
    window: int = 16  # SUBMITs awaiting their response
    send_rate: float = 100.0  # SUBMITs per second, at most
    active_test_interval: float = 30.0  # idle seconds before a CMPP_ACTIVE_TEST
    response_timeout: float = 60.0  # T: seconds before a request is sent again
    tries: int = 3  # C: sends of one request in all
    connect_timeout: float = 10.0  # TCP connect plus CMPP_CONNECT_RESP
    reconnect_min: float = 1.0  # the back-off after a lost connection, doubling...
    reconnect_max: float = 60.0  # ...up to this; a refused login waits this long
    throttle_min: float = 0.5  # the back-off after a Result 8 (flow control), doubling...
    throttle_max: float = 10.0  # ...up to this
    throttle_retries: int = 8  # Result 8s in a row before a submit fails (transient)
    submit_wait: float = 30.0  # how long submit() waits for a bound link
    reassembly_timeout: float = 10.0  # keep below the ISMG's response timeout (60 s)
    max_pending_messages: int = 1_000  # long messages waiting for parts
    max_callbacks: int = 64  # DELIVERs being handed over at once
    stop_timeout: float = 5.0

    def __post_init__(self) -> None:
        problems = [
            name
            for name, ok in (
                ("sp_id", 0 < len(self.sp_id) <= 6 and self.sp_id.isascii()),
                ("service_id", len(self.service_id) <= 10 and self.service_id.isascii()),
                ("src_id", 0 < len(self.src_id) <= 21 and self.src_id.isascii()),
                ("window", self.window >= 1),
                ("send_rate", self.send_rate > 0),
                ("tries", self.tries >= 1),
                ("reconnect_min", 0 < self.reconnect_min <= self.reconnect_max),
                ("throttle_min", 0 < self.throttle_min <= self.throttle_max),
                ("max_callbacks", self.max_callbacks >= 1),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"CMPP settings out of range: {', '.join(problems)}")


# ---------------------------------------------------------------------------------------------
# Pure decisions


def submits_for(settings: CmppSettings, sms: OutboundSms, ref: int) -> list[Submit]:
    """The SUBMITs that carry a reply: UCS-2 always (a 1065 number's replies are Chinese, and
    Msg_Fmt 0 means ASCII, not the GSM alphabet), a concatenation UDH when it takes parts."""
    parts = text.encode(sms.text, ref, allow_gsm=False)
    return [
        Submit(
            service_id=settings.service_id,
            msg_src=settings.sp_id,
            src_id=settings.src_id,
            dest_terminal_ids=(sms.dest,),
            msg_fmt=MsgFmt.UCS2,
            msg_content=part.short_message,
            pk_total=part.total,
            pk_number=part.seq,
            tp_udhi=1 if part.udh else 0,
            registered_delivery=1,
        )
        for part in parts
    ]


@dataclass(frozen=True, slots=True)
class Answer:
    """A DELIVER still to be answered: on the connection it came on, with its Sequence_Id."""

    connection: _Connection
    sequence_id: int
    msg_id: int


@dataclass(frozen=True, slots=True)
class InPart:
    """One part of a citizen's message, as the reassembler holds it."""

    msg_id: int
    msg_fmt: int
    body: bytes
    answers: tuple[Answer, ...]


def inbound_part(deliver: Deliver, answer: Answer) -> tuple[PartKey, int, InPart]:
    """Where a message DELIVER's content belongs: the reassembly key, its part number, the part.
    ValueError for a Msg_Fmt that is not text or a malformed UDH."""
    if deliver.msg_fmt not in TEXT_CODINGS:
        raise ValueError(f"Msg_Fmt {deliver.msg_fmt} is not a text format")
    body, ref, total, seq = deliver.msg_content, 0, 1, 1
    if deliver.tp_udhi:
        udh, body = text.parse_udh(deliver.msg_content)
        if udh is not None:
            ref, total, seq = udh.ref, udh.total, udh.seq
    key = PartKey(deliver.src_terminal_id, deliver.dest_id, ref, total)
    return key, seq, InPart(deliver.msg_id, deliver.msg_fmt, body, (answer,))


def merged(held: InPart | None, part: InPart) -> InPart:
    """A redelivered part replaces the held copy; both copies' DELIVERs are answered later."""
    if held is None:
        return part
    answers = (*held.answers, *part.answers)[-MAX_ANSWERS_PER_PART:]
    return InPart(part.msg_id, part.msg_fmt, part.body, answers)


def message_of(done: Complete[InPart] | Incomplete[InPart]) -> InboundSms:
    """The whole message (or what arrived of it), named by its first part's Msg_Id."""
    parts = done.parts
    coded = [(TEXT_CODINGS[part.msg_fmt], part.body) for part in parts]
    content = text.decode_parts(coded, contiguous=isinstance(done, Complete))
    missing = done.missing if isinstance(done, Incomplete) else ()
    return InboundSms(
        message_id=format_msg_id(parts[0].msg_id),
        source=done.key.source,
        dest=done.key.dest,
        text=content,
        complete=not missing,
        missing=missing,
    )


def receipt_of(report: StatusReport) -> Receipt:
    """A status report as the shared receipt: the Msg_Id of the SUBMIT it reports on, its Stat."""
    return Receipt(
        message_id=format_msg_id(report.msg_id),
        state=text.receipt_state(report.stat),
        error=report.stat,
        done_at=text.parse_receipt_date(report.done_time),
    )


# ---------------------------------------------------------------------------------------------
# One TCP connection


class ConnectionLost(Exception):
    """The connection ended before the response came (the request may be sent again)."""


class NoResponse(Exception):
    """No response after every try."""


class LoginRefused(Exception):
    """The ISMG answered CMPP_CONNECT with an error Status (or a wrong authenticator)."""


R = TypeVar("R", bound=Pdu)


class _Connection:
    """A logged-in TCP connection: writes PDUs, matches responses to requests by Sequence_Id."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        sequence: Callable[[], int],
        settings: CmppSettings,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = Decoder()
        self.closed = asyncio.Event()
        self.reason = ""
        self.last_received = asyncio.get_running_loop().time()
        self._sequence = sequence
        self._settings = settings
        self._pending: dict[int, tuple[type[object], asyncio.Future[Pdu]]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def send(self, frame: Frame) -> None:
        if not self.closed.is_set():
            self.writer.write(encode(frame))

    async def request(self, pdu: Pdu, response: type[R]) -> R:
        """Send `pdu`, again after each `response_timeout` (the same Sequence_Id), `tries` times in
        all; its response, ConnectionLost, or NoResponse."""
        if self.closed.is_set():
            raise ConnectionLost(self.reason)
        sequence_id = self._sequence()
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._pending[sequence_id] = (response, future)
        self._idle.clear()
        data = encode(Frame(sequence_id, pdu))
        try:
            for _ in range(self._settings.tries):
                self.writer.write(data)
                await self.writer.drain()
                with contextlib.suppress(TimeoutError):
                    answer = await asyncio.wait_for(asyncio.shield(future), self._settings.response_timeout)
                    assert isinstance(answer, response)  # resolve() checked the type
                    return answer
            raise NoResponse(f"no {command_name(response.COMMAND)} after {self._settings.tries} tries")
        except (ConnectionError, RuntimeError) as error:  # the transport closed under the write
            raise ConnectionLost(str(error)) from None
        finally:
            self._pending.pop(sequence_id, None)
            if not self._pending:
                self._idle.set()

    def resolve(self, frame: Frame) -> bool:
        """Hand a response to its request; False when none awaits it (late, or not ours)."""
        entry = self._pending.get(frame.sequence_id)
        if entry is None or not isinstance(frame.pdu, entry[0]) or entry[1].done():
            return False
        entry[1].set_result(frame.pdu)
        return True

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
# The link


class CmppLink:
    """An `SmsLink` speaking CMPP 3.0 as an SP to one ISMG (see the module's docstring)."""

    def __init__(
        self,
        settings: CmppSettings,
        on_message: OnMessage,
        on_receipt: OnReceipt,
        *,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        self._settings = settings
        self._on_message = on_message
        self._on_receipt = on_receipt
        self._now = now  # the ISMG's local time is the authenticator's timestamp
        self._sequence_ids = itertools.count(1)
        self._refs = itertools.count(1)
        self._window = asyncio.Semaphore(settings.window)
        self._pacer = Pacer(settings.send_rate)
        self._reassembler: Reassembler[InPart] = Reassembler(
            timeout=settings.reassembly_timeout, max_pending=settings.max_pending_messages
        )
        self._parts_added = asyncio.Event()
        self._connection: _Connection | None = None
        self._stopping = asyncio.Event()
        self._status = LinkStatus("CMPP", log)
        self._handover = Handover(self._status, log, limit=settings.max_callbacks, peer="the ISMG")

    # --- SmsLink ---------------------------------------------------------------------------

    def health(self) -> LinkHealth:
        return self._status.health()

    async def changed(self) -> LinkHealth:
        """Until the link's state (or last error) changes; the health then."""
        await self._status.changed()
        return self._status.health()

    async def run(self) -> None:
        expiry = asyncio.create_task(
            expire_parts(self._reassembler, self._parts_added, self._deliver_message), name="cmpp-parts"
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
                await self._handover.wait()  # their DELIVERs are answered before we leave
                if connection is not None:
                    await connection.settled()
                    await connection.request(Terminate(), TerminateResp)
        if connection is not None:
            connection.close("stopped")
        self._handover.cancel()

    async def submit(self, sms: OutboundSms) -> Submitted:
        if self._stopping.is_set():
            raise SmsRejected("the CMPP link is stopping", transient=True)
        try:
            submits = submits_for(self._settings, sms, next(self._refs) % 256)
        except ValueError as error:
            raise SmsRejected(f"the reply cannot be sent as SMS: {error}", transient=False) from None
        tasks = [asyncio.create_task(self._submit_part(submit)) for submit in submits]
        try:
            ids = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return Submitted(tuple(ids))

    # --- submitting ------------------------------------------------------------------------

    async def _submit_part(self, submit: Submit) -> str:
        settings = self._settings
        throttled = lost = 0
        while True:
            connection = await self._bound()
            async with self._window:
                await self._pace()
                try:
                    response = await connection.request(submit, SubmitResp)
                except ConnectionLost:
                    lost += 1
                    if lost >= settings.tries:
                        raise SmsRejected("the connection to the ISMG kept dropping", transient=True) from None
                    continue  # the next connection sends it again
                except NoResponse as error:
                    raise SmsRejected(str(error), transient=True) from None
            if response.result == Result.OK:
                self._status.counts["parts_out"] += 1
                return format_msg_id(response.msg_id)
            if response.result != Result.FLOW_CONTROL:
                self._status.counts["rejected"] += 1
                raise SmsRejected(
                    f"the ISMG refused the SUBMIT: Result {_result_name(response.result)}", transient=False
                )
            throttled += 1
            self._status.counts["throttled"] += 1
            if throttled > settings.throttle_retries:
                raise SmsRejected(f"flow control {throttled} times in a row", transient=True)
            delay = backoff(throttled, settings.throttle_min, settings.throttle_max)
            self._pacer.hold(_now() + delay)  # every sender slows down, not only this one
            if await pause(self._stopping, delay):
                raise SmsRejected("the CMPP link is stopping", transient=True)

    async def _bound(self) -> _Connection:
        """The logged-in connection, waiting for one at most `submit_wait`."""
        try:
            async with asyncio.timeout(self._settings.submit_wait):
                while True:
                    if self._stopping.is_set():
                        raise SmsRejected("the CMPP link is stopping", transient=True)
                    if self._connection is not None:
                        return self._connection
                    await self._status.changed()
        except TimeoutError:
            raise SmsRejected(f"no CMPP login within {self._settings.submit_wait:g} s", transient=True) from None

    async def _pace(self) -> None:
        delay = self._pacer.reserve(_now())
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
            except (OSError, TimeoutError, CmppDecodeError, ConnectionLost) as error:
                failures += 1
                self._status.failed(f"cannot log in to the ISMG: {describe(error)}")
                delay = backoff(failures, settings.reconnect_min, settings.reconnect_max, jitter=0.5)
            else:
                failures = 0
                if self._stopping.is_set():  # stop() came while logging in: it saw no connection
                    connection.close("stopped")
                    break
                await self._serve(connection)
                delay = backoff(1, settings.reconnect_min, settings.reconnect_max, jitter=0.5)
            await pause(self._stopping, delay)

    async def _open(self) -> _Connection:
        settings = self._settings
        if self._status.state != "auth_failed":  # a refused account stays so until a login succeeds
            self._status.set("connecting")
        async with asyncio.timeout(settings.connect_timeout):
            reader, writer = await asyncio.open_connection(settings.host, settings.port)
            connection = _Connection(reader, writer, self._next_sequence_id, settings)
            try:
                await self._log_in(connection)
            except BaseException:
                connection.close("login failed")
                raise
        return connection

    async def _log_in(self, connection: _Connection) -> None:
        settings = self._settings
        timestamp = timestamp_of(self._now())
        source = authenticator_source(settings.sp_id, settings.secret, timestamp)
        sequence_id = self._next_sequence_id()
        connection.writer.write(encode(Frame(sequence_id, Connect(settings.sp_id, source, VERSION, timestamp))))
        while True:
            data = await connection.reader.read(READ_SIZE)
            if not data:
                raise ConnectionLost("the ISMG closed the connection before CMPP_CONNECT_RESP")
            connection.decoder.feed(data)
            frame = connection.decoder.next_frame()
            if frame is not None:
                break
        if not isinstance(frame.pdu, ConnectResp) or frame.sequence_id != sequence_id:
            raise ConnectionLost(f"the ISMG answered CMPP_CONNECT with {command_name(frame.pdu.COMMAND)}")
        if frame.pdu.status != ConnectStatus.OK:
            raise LoginRefused(f"the ISMG refused the login: Status {_status_name(frame.pdu.status)}")
        if frame.pdu.authenticator != authenticator_ismg(frame.pdu.status, source, settings.secret):
            raise LoginRefused("the ISMG's AuthenticatorISMG is wrong (not the shared secret we hold?)")

    # --- serving a connection --------------------------------------------------------------

    async def _serve(self, connection: _Connection) -> None:
        self._status.counts["binds"] += 1
        self._connection = connection
        self._status.set("bound")
        log.info("CMPP: logged in to %s:%d as SP %s", self._settings.host, self._settings.port, self._settings.sp_id)
        tasks = [
            asyncio.create_task(self._read(connection), name="cmpp-read"),
            asyncio.create_task(self._keep_alive(connection), name="cmpp-active-test"),
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
                self._status.failed(f"connection to the ISMG lost: {connection.reason}")

    async def _read(self, connection: _Connection) -> None:
        try:
            while True:
                self._drain(connection)  # first: frames that came with the CONNECT_RESP
                if connection.closed.is_set():
                    return
                data = await connection.reader.read(READ_SIZE)
                if not data:
                    connection.close("the ISMG closed the connection")
                    return
                connection.last_received = _now()
                connection.decoder.feed(data)
        except OSError as error:
            connection.close(describe(error))

    def _drain(self, connection: _Connection) -> None:
        """Handle every whole frame the decoder holds."""
        while not connection.closed.is_set():
            try:
                frame = connection.decoder.next_frame()
            except CmppDecodeError as error:
                self._malformed(connection, error)
                continue
            if frame is None:
                return
            self._handle(connection, frame)

    def _malformed(self, connection: _Connection, error: CmppDecodeError) -> None:
        self._status.counts["protocol_errors"] += 1
        answer = error_response(error)
        if answer is not None:
            connection.send(answer)
        what = f"answered {command_name(answer.pdu.COMMAND)}" if answer else "dropped"
        log.warning("CMPP: malformed PDU from the ISMG (%s, Sequence_Id %s): %s", error, error.sequence_id, what)
        if error.fatal:
            connection.close(f"framing lost: {error}")

    def _handle(self, connection: _Connection, frame: Frame) -> None:
        pdu = frame.pdu
        if isinstance(pdu, Deliver):
            self._on_deliver(connection, frame.sequence_id, pdu)
        elif isinstance(pdu, ActiveTest):
            connection.send(Frame(frame.sequence_id, ActiveTestResp()))
        elif isinstance(pdu, Terminate):
            connection.send(Frame(frame.sequence_id, TerminateResp()))
            connection.close("the ISMG sent CMPP_TERMINATE")
        elif isinstance(pdu, SubmitResp | ActiveTestResp | TerminateResp):
            if not connection.resolve(frame):
                log.info("CMPP: %s for no request awaiting it (late?)", command_name(pdu.COMMAND))
        else:
            self._status.counts["protocol_errors"] += 1
            log.warning("CMPP: unexpected %s from the ISMG, dropped", command_name(pdu.COMMAND))

    async def _keep_alive(self, connection: _Connection) -> None:
        interval = self._settings.active_test_interval
        while not connection.closed.is_set():
            idle = _now() - connection.last_received
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            try:
                await connection.request(ActiveTest(), ActiveTestResp)
            except NoResponse as error:
                connection.close(str(error))
            except ConnectionLost:
                return

    # --- inbound ---------------------------------------------------------------------------

    def _on_deliver(self, connection: _Connection, sequence_id: int, deliver: Deliver) -> None:
        answer = Answer(connection, sequence_id, deliver.msg_id)
        if self._stopping.is_set() or self._handover.full():
            _answer((answer,), Result.FLOW_CONTROL)  # not taken now: the ISMG delivers it again later
            return
        if deliver.registered_delivery:
            receipt = receipt_of(StatusReport.parse(deliver.msg_content))  # its length was checked
            call = functools.partial(self._on_receipt, receipt)
            self._handover.start(deliver.src_terminal_id, call, _settle((answer,)), "receipts_in")
            return
        try:
            key, seq, part = inbound_part(deliver, answer)
            done = self._reassembler.add(key, seq, merged(self._reassembler.part(key, seq), part), _now())
        except ReassemblyFull as error:
            log.warning("CMPP: %s", error)
            _answer((answer,), Result.FLOW_CONTROL)
            return
        except ValueError as error:
            self._status.counts["protocol_errors"] += 1
            log.warning("CMPP: DELIVER from %s refused: %s", mask_phone(deliver.src_terminal_id), error)
            _answer((answer,), Result.BAD_STRUCTURE)
            return
        if done is None:
            self._parts_added.set()
        else:
            self._deliver_message(done)

    def _deliver_message(self, done: Complete[InPart] | Incomplete[InPart]) -> None:
        message = message_of(done)
        answers = tuple(answer for part in done.parts for answer in part.answers)
        if not message.complete:
            log.warning(
                "CMPP: message %s from %s handed over without parts %s (reassembly timeout)",
                message.message_id,
                mask_phone(message.source),
                ",".join(map(str, message.missing)),
            )
        call = functools.partial(self._on_message, message)
        self._handover.start(message.source, call, _settle(answers), "messages_in")

    def _next_sequence_id(self) -> int:
        return (next(self._sequence_ids) - 1) % 0xFFFFFFFF + 1  # 1 .. 2**32-1, then 1 again


def _settle(answers: Sequence[Answer]) -> Callable[[bool], None]:
    """Answer the DELIVERs of what was handed over: Result 0, or 8 so the ISMG delivers it again."""
    return lambda ok: _answer(answers, Result.OK if ok else Result.FLOW_CONTROL)


def _answer(answers: Sequence[Answer], result: Result) -> None:
    for answer in answers:
        answer.connection.send(Frame(answer.sequence_id, DeliverResp(answer.msg_id, result)))


def _now() -> float:
    return asyncio.get_running_loop().time()


def _result_name(result: int) -> str:
    try:
        return f"{result} ({Result(result).name.lower()})"
    except ValueError:
        return str(result)


def _status_name(status: int) -> str:
    try:
        return f"{status} ({ConnectStatus(status).name.lower()})"
    except ValueError:
        return f"{status} (other error)"
