"""The SMPP 3.4 session: `SmppLink`, an `SmsLink` over asyncio streams, bound as a transceiver.

A thin shell over the codec (`smpp.py`), the text core (`text.py`) and what every SMS session
shares (`session.py`). The decisions are pure functions at the top (what a deliver_sm's part is,
what a reassembled message says); the classes below only do I/O:

- `run()` connects, binds as transceiver, serves the connection until it ends, then reconnects
  after a back-off doubling from `reconnect_min` to `reconnect_max`, jittered. A refused bind
  (ESME_RINVPASWD, ESME_RINVSYSID, ESME_RBINDFAIL) puts the health in `auth_failed`, is logged
  once, and is retried only at the ceiling (`reconnect_max`): wrong credentials are an operator's
  to fix, and an SMSC may lock an account that hammers it.
- Keep-alive: after `enquire_interval` without a PDU from the SMSC, an enquire_link; the SMSC's
  own are answered. A request without its response after `response_timeout` ends the connection
  (a link that stops answering is reconnected).
- `submit()` splits a reply (`text.encode`: GSM 03.38 or UCS-2, a concatenation UDH when long)
  and sends its parts in order inside a window of `window` submit_sm awaiting their response, at
  most `send_rate` per second, each with `registered_delivery`. ESME_RTHROTTLED and ESME_RMSGQFUL
  slow the whole link down and resubmit after a back-off (`throttle_retries` times); a connection
  lost before the response sends the part again on the next one (at least once: SMPP has no way
  to ask whether the SMSC took it); any other status is a permanent `SmsRejected`.
- Inbound deliver_sm: receipts (esm_class message type bits) go to `on_receipt`; messages (GSM,
  ASCII, Latin-1, UCS-2; in short_message or message_payload; long ones joined by their UDH, 8- or
  16-bit reference, or their SAR TLVs, in `text.Reassembler`) to `on_message`. A deliver_sm is
  answered only after the callback returned; when it raised, with ESME_RX_T_APPN so the SMSC
  delivers it again (the message keeps its `message_id`, a fingerprint of what a redelivery does
  not change). The parts of a long message are all answered once the whole message (or what the
  reassembly timeout delivers) was handed over: keep `reassembly_timeout` below the SMSC's
  response timeout, and expect an SMSC whose window is smaller than a message's parts to wait for
  that timeout. Callbacks run beside the reading, one source's in order, at most `max_callbacks`
  at once: past that a deliver_sm is answered ESME_RX_T_APPN at once (the SMSC retries).
- `stop()` lets running callbacks and awaited responses finish, unbinds and waits for unbind_resp,
  all within `stop_timeout`.

Bounds: the decoder holds at most one PDU (`max_pdu`) beyond a read of `READ_SIZE`; the window
bounds submit_sm in flight; `max_callbacks` the deliveries being handed over; the reassembler
`max_pending_messages` long messages of at most 255 parts; the transport's write buffer is drained
after each request.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from gateway.channels.sms import smpp
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
from gateway.channels.sms.smpp import (
    BindTransceiver,
    BindTransceiverResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SmppDecodeError,
    Status,
    SubmitSmResp,
    Unbind,
    UnbindResp,
    status_name,
)
from gateway.channels.sms.text import (
    Complete,
    Incomplete,
    Part,
    PartKey,
    Reassembler,
    ReassemblyFull,
    decode_parts,
    encode,
    is_text_coding,
    parse_udh,
)
from gateway.ticket import mask_phone

log = logging.getLogger("gateway.channels.sms.smpp")

READ_SIZE = 65_536
MAX_ANSWERS_PER_PART = 4  # copies of one part (redeliveries) whose deliver_sm are answered together
MAX_SEQUENCE = 0x7FFFFFFF  # SMPP 3.4 §3.2: sequence numbers run 1 .. 0x7FFFFFFF
AUTH_REFUSALS = {
    Status.ESME_RINVPASWD: "wrong password",
    Status.ESME_RINVSYSID: "unknown system_id",
    Status.ESME_RBINDFAIL: "bind failed",
}
THROTTLING = {Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL}
TRANSIENT = THROTTLING | {Status.ESME_RSYSERR, Status.ESME_RX_T_APPN}


@dataclass(frozen=True, slots=True)
class SmppSettings:
    """One SMSC account. Defaults are for a carrier's SMSC; the times are seconds."""

    host: str
    port: int
    system_id: str  # at most 15 characters
    password: str = field(repr=False)  # at most 8 characters (SMPP 3.4)
    source_addr: str  # the hotline's SMS number, what replies come from
    system_type: str = ""
    window: int = 10  # submit_sm awaiting their response at once
    send_rate: float = 100.0  # submit_sm per second, at most
    enquire_interval: float = 30.0  # an enquire_link after this long without a PDU from the SMSC
    response_timeout: float = 10.0  # a request without its response this long ends the connection
    connect_timeout: float = 10.0  # TCP connect and bind together
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0  # also how often a refused bind is tried again
    throttle_min: float = 0.5  # the back-off after ESME_RTHROTTLED / ESME_RMSGQFUL, doubling
    throttle_max: float = 10.0
    throttle_retries: int = 8  # then the submit fails (transient)
    submit_wait: float = 30.0  # how long submit() waits for a bound link
    resend_tries: int = 3  # sends of one part across lost connections, at most
    registered_delivery: int = smpp.REGISTERED_DELIVERY_FINAL
    reassembly_timeout: float = 10.0  # below the SMSC's response timeout (see the module)
    max_pending_messages: int = 200  # long messages waiting for parts
    max_callbacks: int = 64  # deliveries being handed over at once
    stop_timeout: float = 5.0
    max_pdu: int = smpp.MAX_PDU_SIZE

    def __post_init__(self) -> None:
        problems = [
            name
            for name, ok in (
                ("system_id", 0 < len(self.system_id) <= 15 and self.system_id.isascii()),
                ("password", len(self.password) <= 8 and self.password.isascii()),
                ("source_addr", 0 < len(self.source_addr) <= 20),
                ("window", self.window >= 1),
                ("send_rate", self.send_rate > 0),
                ("enquire_interval", self.enquire_interval > 0),
                ("response_timeout", self.response_timeout > 0),
                ("reconnect_min", 0 < self.reconnect_min <= self.reconnect_max),
                ("throttle_min", 0 < self.throttle_min <= self.throttle_max),
                ("resend_tries", self.resend_tries >= 1),
                ("reassembly_timeout", self.reassembly_timeout > 0),
                ("max_pending_messages", self.max_pending_messages >= 1),
                ("max_callbacks", self.max_callbacks >= 1),
            )
            if not ok
        ]
        if problems:
            raise ValueError(f"SMPP settings out of range: {', '.join(problems)}")


# ---------------------------------------------------------------------------------------------
# Pure decisions


@dataclass(frozen=True, slots=True)
class Answer:
    """A deliver_sm still to be answered: on the connection it came on, with its sequence number."""

    connection: _Connection
    sequence: int


@dataclass(frozen=True, slots=True)
class InPart:
    """One part of a citizen's message, as the reassembler holds it."""

    data_coding: int
    body: bytes
    fingerprint: str
    answers: tuple[Answer, ...]


def inbound_part(pdu: DeliverSm, answer: Answer) -> tuple[PartKey, int, InPart]:
    """Where a deliver_sm's text belongs: the reassembly key, its part number, the part.
    ValueError for a data_coding that is not text, a malformed UDH or SAR."""
    if not is_text_coding(pdu.data_coding):
        raise ValueError(f"data_coding {pdu.data_coding} is not text")
    payload = pdu.tlv(smpp.Tag.MESSAGE_PAYLOAD)
    body = pdu.short_message if payload is None else payload
    ref, total, seq = 0, 1, 1
    if pdu.esm_class & smpp.ESM_UDHI:
        udh, body = parse_udh(body)
        if udh is not None:
            ref, total, seq = udh.ref, udh.total, udh.seq
    elif (sar := smpp.sar_of(pdu)) is not None:
        ref, total, seq = sar
    key = PartKey(pdu.source_addr, pdu.destination_addr, ref, total)
    return key, seq, InPart(pdu.data_coding, body, smpp.fingerprint(pdu), (answer,))


def merged(held: InPart | None, part: InPart) -> InPart:
    """A redelivered part replaces the held copy; both copies' deliver_sm are answered later."""
    if held is None:
        return part
    answers = (*held.answers, *part.answers)[-MAX_ANSWERS_PER_PART:]
    return InPart(part.data_coding, part.body, part.fingerprint, answers)


def message_of(done: Complete[InPart] | Incomplete[InPart]) -> InboundSms:
    """The whole message (or what arrived of it), named by the fingerprints of its parts."""
    parts = done.parts
    missing = done.missing if isinstance(done, Incomplete) else ()
    digest = hashlib.sha256("\n".join(part.fingerprint for part in parts).encode()).hexdigest()
    return InboundSms(
        message_id=parts[0].fingerprint if len(parts) == 1 and not missing else digest[:32],
        source=done.key.source,
        dest=done.key.dest,
        text=decode_parts([(part.data_coding, part.body) for part in parts], contiguous=not missing),
        complete=not missing,
        missing=missing,
    )


# ---------------------------------------------------------------------------------------------
# One TCP connection


class ConnectionLost(Exception):
    """The connection ended before the response came (the request may be sent again)."""


class NoResponse(Exception):
    """No response within the response timeout."""


class BindRefused(Exception):
    """The SMSC refused our credentials."""


class _Connection:
    """A TCP connection to the SMSC: writes PDUs, matches responses to requests by sequence number."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, settings: SmppSettings) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = smpp.Decoder(settings.max_pdu)
        self.closed = asyncio.Event()
        self.reason = ""
        self.last_received = asyncio.get_running_loop().time()
        self._timeout = settings.response_timeout
        self._pending: dict[int, asyncio.Future[Pdu]] = {}
        self._idle = asyncio.Event()
        self._idle.set()

    def send(self, pdu: Pdu) -> None:
        if not self.closed.is_set():
            self.writer.write(smpp.encode(pdu))

    async def request(self, pdu: Pdu) -> Pdu:
        """Send `pdu`; its response (or a generic_nack), ConnectionLost, or NoResponse."""
        if self.closed.is_set():
            raise ConnectionLost(self.reason)
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        self._pending[pdu.sequence] = future
        self._idle.clear()
        try:
            self.writer.write(smpp.encode(pdu))
            await self.writer.drain()
            return await asyncio.wait_for(future, self._timeout)
        except TimeoutError:
            raise NoResponse(f"no response to {pdu.COMMAND.name.lower()} in {self._timeout:g} s") from None
        except (ConnectionError, RuntimeError) as error:  # the transport closed under the write
            raise ConnectionLost(describe(error)) from None
        finally:
            self._pending.pop(pdu.sequence, None)
            if not self._pending:
                self._idle.set()

    def resolve(self, pdu: Pdu) -> bool:
        """Hand a response to its request; False when none awaits it (late, or not ours)."""
        future = self._pending.get(pdu.sequence)
        if future is None or future.done():
            return False
        future.set_result(pdu)
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
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ConnectionLost(reason))


# ---------------------------------------------------------------------------------------------
# The link


class SmppLink:
    """An `SmsLink` bound as a transceiver to one SMSC (see the module's docstring)."""

    def __init__(self, settings: SmppSettings, on_message: OnMessage, on_receipt: OnReceipt) -> None:
        self._settings = settings
        self._on_message = on_message
        self._on_receipt = on_receipt
        self._sequences = itertools.count(1)
        self._refs = itertools.count(1)
        self._window = asyncio.Semaphore(settings.window)
        self._pacer = Pacer(settings.send_rate)
        self._reassembler: Reassembler[InPart] = Reassembler(
            timeout=settings.reassembly_timeout, max_pending=settings.max_pending_messages
        )
        self._parts_added = asyncio.Event()
        self._connection: _Connection | None = None
        self._stopping = asyncio.Event()
        self._status = LinkStatus("SMPP", log)
        self._handover = Handover(self._status, log, limit=settings.max_callbacks, peer="the SMSC")

    # --- SmsLink ---------------------------------------------------------------------------

    def health(self) -> LinkHealth:
        return self._status.health()

    async def changed(self) -> LinkHealth:
        """Until the link's state (or last error) changes; the health then."""
        await self._status.changed()
        return self.health()

    async def run(self) -> None:
        deliver: Callable[[Incomplete[InPart]], None] = self._deliver_message
        expiry = asyncio.create_task(expire_parts(self._reassembler, self._parts_added, deliver), name="smpp-parts")
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
                await self._handover.wait()  # their deliver_sm are answered before we unbind
                if connection is not None:
                    await connection.settled()
                    await connection.request(Unbind(sequence=self._next_sequence()))
        if connection is not None:
            connection.close("stopped")
        self._handover.cancel()

    async def submit(self, sms: OutboundSms) -> Submitted:
        if self._stopping.is_set():
            raise SmsRejected("the SMPP link is stopping", transient=True)
        try:
            parts = encode(sms.text, next(self._refs) % 256)
        except ValueError as error:
            raise SmsRejected(f"the reply cannot be sent as SMS: {error}", transient=False) from None
        # In order: a handset that shows parts as they come shows the text in its order.
        return Submitted(tuple([await self._submit_part(part, sms.dest) for part in parts]))

    # --- submitting ------------------------------------------------------------------------

    async def _submit_part(self, part: Part, dest: str) -> str:
        settings = self._settings
        throttled = lost = 0
        while True:
            connection = await self._bound()
            async with self._window:
                await self._pace()
                pdu = smpp.submit_sm_for(
                    part,
                    sequence=self._next_sequence(),
                    source=settings.source_addr,
                    dest=dest,
                    registered_delivery=settings.registered_delivery,
                )
                try:
                    response = await connection.request(pdu)
                except (ConnectionLost, NoResponse) as error:
                    connection.close(str(error))  # a link that stops answering is reconnected
                    lost += 1
                    if lost >= settings.resend_tries:
                        raise SmsRejected(f"the SMSC did not answer {lost} times", transient=True) from None
                    continue  # the next connection sends it again
            if response.status == Status.ESME_ROK and isinstance(response, SubmitSmResp):
                self._status.counts["parts_out"] += 1
                return response.message_id
            if response.status not in THROTTLING:
                self._status.counts["rejected"] += 1
                raise SmsRejected(
                    f"the SMSC refused the submit_sm: {status_name(response.status)}",
                    transient=response.status in TRANSIENT,
                )
            throttled += 1
            self._status.counts["throttled"] += 1
            if throttled > settings.throttle_retries:
                raise SmsRejected(f"throttled {throttled} times in a row", transient=True)
            delay = backoff(throttled, settings.throttle_min, settings.throttle_max)
            self._pacer.hold(_now() + delay)  # every sender slows down, not only this one
            if await pause(self._stopping, delay):
                raise SmsRejected("the SMPP link is stopping", transient=True)

    async def _bound(self) -> _Connection:
        """The bound connection, waiting for one at most `submit_wait`."""
        try:
            async with asyncio.timeout(self._settings.submit_wait):
                while True:
                    if self._stopping.is_set():
                        raise SmsRejected("the SMPP link is stopping", transient=True)
                    if self._connection is not None and not self._connection.closed.is_set():
                        return self._connection
                    await self._status.changed()
        except TimeoutError:
            raise SmsRejected(f"no SMPP bind within {self._settings.submit_wait:g} s", transient=True) from None

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
            except BindRefused as error:
                self._status.refused(str(error), settings.reconnect_max)
                delay = settings.reconnect_max
            except (OSError, TimeoutError, SmppDecodeError, ConnectionLost) as error:
                failures += 1
                self._status.failed(f"cannot bind to the SMSC: {describe(error)}")
                delay = backoff(failures, settings.reconnect_min, settings.reconnect_max, jitter=0.5)
            else:
                if self._stopping.is_set():  # stop() came while this bind was on its way
                    connection.close("stopped")
                    break
                failures = 0
                await self._serve(connection)
                delay = backoff(1, settings.reconnect_min, settings.reconnect_max, jitter=0.5)
            await pause(self._stopping, delay)

    async def _open(self) -> _Connection:
        settings = self._settings
        if self._status.state != "auth_failed":  # a refused account stays so until a bind succeeds
            self._status.set("connecting")
        async with asyncio.timeout(settings.connect_timeout):
            reader, writer = await asyncio.open_connection(settings.host, settings.port)
            connection = _Connection(reader, writer, settings)
            try:
                await self._bind(connection)
            except BaseException:
                connection.close("bind failed")
                raise
        return connection

    async def _bind(self, connection: _Connection) -> None:
        settings = self._settings
        bind = BindTransceiver(
            sequence=self._next_sequence(),
            system_id=settings.system_id,
            password=settings.password,
            system_type=settings.system_type,
        )
        connection.send(bind)
        response = await self._first_pdu(connection)
        if not isinstance(response, BindTransceiverResp | GenericNack) or response.sequence != bind.sequence:
            raise ConnectionLost(f"the SMSC answered bind_transceiver with {response.COMMAND.name.lower()}")
        if response.status in AUTH_REFUSALS:
            raise BindRefused(
                f"the SMSC refused the bind as {settings.system_id!r}: {status_name(response.status)} "
                f"({AUTH_REFUSALS[Status(response.status)]})"
            )
        if response.status != Status.ESME_ROK:
            raise ConnectionLost(f"the SMSC refused the bind: {status_name(response.status)}")

    async def _first_pdu(self, connection: _Connection) -> Pdu:
        while True:
            pdu = connection.decoder.next_pdu()
            if pdu is not None:
                return pdu
            data = await connection.reader.read(READ_SIZE)
            if not data:
                raise ConnectionLost("the SMSC closed the connection before bind_transceiver_resp")
            connection.decoder.feed(data)

    # --- serving a connection --------------------------------------------------------------

    async def _serve(self, connection: _Connection) -> None:
        settings = self._settings
        self._status.counts["binds"] += 1
        self._connection = connection
        self._status.set("bound")
        log.info("SMPP: bound to %s:%d as %s (transceiver)", settings.host, settings.port, settings.system_id)
        tasks = [
            asyncio.create_task(self._read(connection), name="smpp-read"),
            asyncio.create_task(self._keep_alive(connection), name="smpp-enquire-link"),
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
                self._status.failed(f"connection to the SMSC lost: {connection.reason}")

    async def _read(self, connection: _Connection) -> None:
        try:
            while True:
                self._drain(connection)  # PDUs that came with the bind response are there already
                if connection.closed.is_set():
                    return
                data = await connection.reader.read(READ_SIZE)
                if not data:
                    connection.close("the SMSC closed the connection")
                    return
                connection.last_received = _now()
                connection.decoder.feed(data)
        except OSError as error:
            connection.close(describe(error))

    def _drain(self, connection: _Connection) -> None:
        """Handle every whole PDU the decoder holds."""
        while not connection.closed.is_set():
            try:
                pdu = connection.decoder.next_pdu()
            except SmppDecodeError as error:
                self._malformed(connection, error)
                continue
            if pdu is None:
                return
            self._handle(connection, pdu)

    def _malformed(self, connection: _Connection, error: SmppDecodeError) -> None:
        self._status.counts["protocol_errors"] += 1
        nack = smpp.error_response(error)
        if nack is not None:
            connection.send(nack)
        log.warning(
            "SMPP: malformed PDU from the SMSC (%s, sequence %s): %s",
            error,
            error.sequence,
            f"answered generic_nack {status_name(nack.status)}" if nack else "dropped",
        )
        if error.fatal:
            connection.close(f"framing lost: {error}")

    def _handle(self, connection: _Connection, pdu: Pdu) -> None:
        if isinstance(pdu, DeliverSm):
            self._on_deliver(connection, pdu)
        elif isinstance(pdu, EnquireLink):
            connection.send(EnquireLinkResp(sequence=pdu.sequence))
        elif isinstance(pdu, Unbind):
            connection.send(UnbindResp(sequence=pdu.sequence))
            connection.close("the SMSC unbound")
        elif smpp.is_response(pdu.COMMAND):
            if not connection.resolve(pdu):
                log.info("SMPP: %s for no request awaiting it (late?)", pdu.COMMAND.name.lower())
        else:  # a request an SMSC has no business sending to an ESME (submit_sm, a bind...)
            self._status.counts["protocol_errors"] += 1
            connection.send(GenericNack(sequence=pdu.sequence, status=Status.ESME_RINVBNDSTS))
            log.warning("SMPP: unexpected %s from the SMSC, refused", pdu.COMMAND.name.lower())

    async def _keep_alive(self, connection: _Connection) -> None:
        interval = self._settings.enquire_interval
        while not connection.closed.is_set():
            idle = _now() - connection.last_received
            if idle < interval:
                await asyncio.sleep(interval - idle)
                continue
            try:
                await connection.request(EnquireLink(sequence=self._next_sequence()))
            except NoResponse as error:
                connection.close(str(error))
            except ConnectionLost:
                return

    # --- inbound ---------------------------------------------------------------------------

    def _on_deliver(self, connection: _Connection, pdu: DeliverSm) -> None:
        answer = Answer(connection, pdu.sequence)
        if self._stopping.is_set() or self._handover.full():
            _answer((answer,), Status.ESME_RX_T_APPN)  # not taken now: the SMSC delivers it again later
            return
        if smpp.is_receipt(pdu):
            self._on_receipt_pdu(pdu, answer)
            return
        try:
            key, seq, part = inbound_part(pdu, answer)
            done = self._reassembler.add(key, seq, merged(self._reassembler.part(key, seq), part), _now())
        except ReassemblyFull as error:
            log.warning("SMPP: %s", error)
            _answer((answer,), Status.ESME_RX_T_APPN)
            return
        except ValueError as error:
            self._status.counts["protocol_errors"] += 1
            log.warning("SMPP: deliver_sm from %s refused: %s", mask_phone(pdu.source_addr), error)
            _answer((answer,), Status.ESME_RX_P_APPN)
            return
        if done is None:
            self._parts_added.set()
        else:
            self._deliver_message(done)

    def _on_receipt_pdu(self, pdu: DeliverSm, answer: Answer) -> None:
        try:
            receipt = smpp.receipt_of(pdu)
        except ValueError as error:
            self._status.counts["protocol_errors"] += 1
            log.warning("SMPP: a receipt from the SMSC that says nothing we can use (%s): dropped", error)
            _answer((answer,), Status.ESME_RX_P_APPN)
            return
        self._handover.start(
            pdu.source_addr, lambda: self._on_receipt(receipt), _settle((answer,)), counter="receipts_in"
        )

    def _deliver_message(self, done: Complete[InPart] | Incomplete[InPart]) -> None:
        message = message_of(done)
        if not message.complete:
            log.warning(
                "SMPP: message %s from %s handed over without parts %s (reassembly timeout)",
                message.message_id,
                mask_phone(message.source),
                ",".join(map(str, message.missing)),
            )
        answers = tuple(answer for part in done.parts for answer in part.answers)
        self._handover.start(message.source, lambda: self._on_message(message), _settle(answers), "messages_in")

    # --- small helpers ---------------------------------------------------------------------

    def _next_sequence(self) -> int:
        return (next(self._sequences) - 1) % MAX_SEQUENCE + 1


def _settle(answers: Sequence[Answer]) -> Callable[[bool], None]:
    def settle(ok: bool) -> None:
        _answer(answers, Status.ESME_ROK if ok else Status.ESME_RX_T_APPN)

    return settle


def _answer(answers: Sequence[Answer], status: Status) -> None:
    for answer in answers:
        answer.connection.send(DeliverSmResp(sequence=answer.sequence, status=status))


def _now() -> float:
    return asyncio.get_running_loop().time()
