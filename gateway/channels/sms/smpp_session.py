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
  that timeout. A part of a long message taken already that comes again (the answer to it was
  lost) is answered at once (`text.HandedOver`); each message names its concatenation so that the
  adapter knows such parts after a restart. Callbacks run beside the reading, one source's in
  order, at most `max_callbacks` at once: past that a deliver_sm is answered ESME_RX_T_APPN at
  once (the SMSC retries).
- `stop()` lets running callbacks and awaited responses finish, unbinds and waits for unbind_resp,
  all within `stop_timeout`.

Bounds: the decoder holds at most one PDU (`max_pdu`) beyond a read of `session.READ_SIZE`; the window
bounds submit_sm in flight; `max_callbacks` the deliveries being handed over; the reassembler
`max_pending_messages` long messages of at most 255 parts; the transport's write buffer is drained
after each request.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass, field

from gateway.channels.sms import smpp
from gateway.channels.sms.framing import SmsDecodeError
from gateway.channels.sms.link import InboundSms, OnMessage, OnReceipt, OutboundSms, SmsRejected, Submitted
from gateway.channels.sms.session import (
    Connection,
    ConnectionLost,
    LoginRefused,
    NoResponse,
    Outcome,
    Session,
)
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
    decode_parts,
    encode,
    is_text_coding,
    parse_udh,
    part_digest,
)

log = logging.getLogger("gateway.channels.sms.smpp")

MAX_ANSWERS_PER_PART = 4  # copies of one part (redeliveries) whose deliver_sm are answered together
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


ANSWER_STATUS: dict[Outcome, Status] = {
    "ok": Status.ESME_ROK,
    "again": Status.ESME_RX_T_APPN,  # the SMSC delivers it again
    "refused": Status.ESME_RX_P_APPN,
}


@dataclass(frozen=True, slots=True)
class Answer:
    """A deliver_sm still to be answered: on the connection it came on, with its sequence number."""

    connection: Connection[Pdu]
    sequence: int

    def send(self, outcome: Outcome) -> None:
        self.connection.send(DeliverSmResp(sequence=self.sequence, status=ANSWER_STATUS[outcome]))


@dataclass(frozen=True, slots=True)
class InPart:
    """One part of a citizen's message, as the reassembler holds it."""

    data_coding: int
    body: bytes
    fingerprint: str
    answers: tuple[Answer, ...]

    @property
    def digest(self) -> str:
        """What the part held (a redelivered part has the same)."""
        return part_digest(self.data_coding, self.body)


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
# The link


class _Wire:
    """SMPP as the shared connection writes and reads it."""

    def __init__(self, max_pdu: int) -> None:
        self._decoder = smpp.Decoder(max_pdu)

    def encode(self, message: Pdu) -> bytes:
        return smpp.encode(message)

    def sequence_of(self, message: Pdu) -> int:
        return message.sequence

    def name_of(self, message: Pdu) -> str:
        return message.COMMAND.name.lower()

    def feed(self, data: bytes) -> None:
        self._decoder.feed(data)

    def next_message(self) -> Pdu | None:
        return self._decoder.next_pdu()


class SmppLink(Session[SmppSettings, Pdu, InPart]):
    """An `SmsLink` bound as a transceiver to one SMSC (see the module's docstring)."""

    PROTOCOL = "SMPP"
    PEER = "the SMSC"
    LOGIN = "bind"
    THROTTLED = "throttled"
    MAX_SEQUENCE = 0x7FFFFFFF  # SMPP 3.4 §3.2: sequence numbers run 1 .. 0x7FFFFFFF

    def __init__(self, settings: SmppSettings, on_message: OnMessage, on_receipt: OnReceipt) -> None:
        super().__init__(
            settings,
            on_message,
            on_receipt,
            log,
            merge=merged,
            whole=message_of,
            keep_alive=settings.enquire_interval,
        )

    async def submit(self, sms: OutboundSms) -> Submitted:
        self._refuse_when_stopping()
        try:
            parts = encode(sms.text, next(self._refs) % 256)
        except ValueError as error:
            raise SmsRejected(f"the reply cannot be sent as SMS: {error}", transient=False) from None
        # In order: a handset that shows parts as they come shows the text in its order.
        ids = [
            await self._in_window(functools.partial(self._send_part, part, sms.dest), self._settings.resend_tries)
            for part in parts
        ]
        return Submitted(tuple(ids))

    async def _send_part(self, part: Part, dest: str, connection: Connection[Pdu]) -> str | None:
        """One try: the SMSC's message id, None when throttled."""
        settings = self._settings
        pdu = smpp.submit_sm_for(
            part,
            sequence=self._next_sequence(),
            source=settings.source_addr,
            dest=dest,
            registered_delivery=settings.registered_delivery,
        )
        try:
            response = await connection.request(pdu)
        except NoResponse as error:
            connection.close(str(error))  # a link that stops answering is reconnected
            raise ConnectionLost(str(error)) from None  # and the part goes again (at least once)
        if response.status == Status.ESME_ROK and isinstance(response, SubmitSmResp):
            return response.message_id
        if response.status in THROTTLING:
            return None
        self._status.counts["rejected"] += 1
        raise SmsRejected(
            f"the SMSC refused the submit_sm: {status_name(response.status)}",
            transient=response.status in TRANSIENT,
        )

    # --- the session's hooks ---------------------------------------------------------------

    def _wire(self) -> _Wire:
        return _Wire(self._settings.max_pdu)

    async def _log_in(self, connection: Connection[Pdu]) -> None:
        settings = self._settings
        bind = BindTransceiver(
            sequence=self._next_sequence(),
            system_id=settings.system_id,
            password=settings.password,
            system_type=settings.system_type,
        )
        connection.send(bind)
        response = await connection.first(self.PEER, "bind_transceiver_resp")
        if not isinstance(response, BindTransceiverResp | GenericNack) or response.sequence != bind.sequence:
            raise ConnectionLost(f"the SMSC answered bind_transceiver with {response.COMMAND.name.lower()}")
        if response.status in AUTH_REFUSALS:
            raise LoginRefused(
                f"the SMSC refused the bind as {settings.system_id!r}: {status_name(response.status)} "
                f"({AUTH_REFUSALS[Status(response.status)]})"
            )
        if response.status != Status.ESME_ROK:
            raise ConnectionLost(f"the SMSC refused the bind: {status_name(response.status)}")

    def _logged_in(self) -> str:
        settings = self._settings
        return f"bound to {settings.host}:{settings.port} as {settings.system_id} (transceiver)"

    async def _keep_alive_request(self, connection: Connection[Pdu]) -> None:
        await connection.request(EnquireLink(sequence=self._next_sequence()))

    async def _goodbye(self, connection: Connection[Pdu]) -> None:
        await connection.request(Unbind(sequence=self._next_sequence()))

    def _answer_malformed(self, connection: Connection[Pdu], error: SmsDecodeError) -> str:
        assert isinstance(error, SmppDecodeError)  # the SMPP decoder's
        nack = smpp.error_response(error)
        if nack is None:
            return f"sequence {error.sequence}: dropped"
        connection.send(nack)
        return f"sequence {error.sequence}: answered generic_nack {status_name(nack.status)}"

    def _handle(self, connection: Connection[Pdu], pdu: Pdu) -> None:
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
            connection.send(GenericNack(sequence=pdu.sequence, status=Status.ESME_RINVBNDSTS))
            self._unexpected(pdu.COMMAND.name.lower(), "refused")

    # --- inbound ---------------------------------------------------------------------------

    def _on_deliver(self, connection: Connection[Pdu], pdu: DeliverSm) -> None:
        answer = Answer(connection, pdu.sequence)
        if self._busy(answer):
            return
        if smpp.is_receipt(pdu):
            self._on_receipt_pdu(pdu, answer)
        else:
            self._add_part(answer, pdu.source_addr, "deliver_sm", lambda: inbound_part(pdu, answer))

    def _on_receipt_pdu(self, pdu: DeliverSm, answer: Answer) -> None:
        try:
            receipt = smpp.receipt_of(pdu)
        except ValueError as error:
            self._status.counts["protocol_errors"] += 1
            log.warning("SMPP: a receipt from the SMSC that says nothing we can use (%s): dropped", error)
            answer.send("refused")
            return
        self._hand_over(pdu.source_addr, lambda: self._on_receipt(receipt), (answer,), "receipts_in")
