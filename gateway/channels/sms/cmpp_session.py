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
  was handed over; a part of one taken already that comes again (the answer to it was lost) is
  answered at once (`text.HandedOver`), and each message names its concatenation so that the
  adapter knows such parts after a restart. Callbacks run beside the reading (a slow one never
  delays a SUBMIT_RESP), one source number's in order, at most `max_callbacks` at once: past that
  a DELIVER is answered Result 8 at once.
- `stop()` lets running callbacks and awaited responses finish, sends CMPP_TERMINATE, waits for
  its response: all within `stop_timeout`.

Bounds: the decoder holds at most one PDU (`cmpp.MAX_PDU_SIZE`) beyond a read of `session.READ_SIZE`; the
window bounds SUBMITs in flight; `max_callbacks` the DELIVERs being handed over (so the answers
waiting to be written too); the reassembler `max_pending_messages` long messages of at most 255
parts; a request waits for the transport's write buffer to drain.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

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
from gateway.channels.sms.text import Complete, Incomplete, PartKey, Receipt, part_digest

log = logging.getLogger("gateway.sms.cmpp")

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


ANSWER_RESULT: dict[Outcome, Result] = {
    "ok": Result.OK,
    "again": Result.FLOW_CONTROL,  # the ISMG delivers it again later
    "refused": Result.BAD_STRUCTURE,
}


@dataclass(frozen=True, slots=True)
class Answer:
    """A DELIVER still to be answered: on the connection it came on, with its Sequence_Id (its
    Msg_Id echoed)."""

    connection: Connection[Frame]
    sequence_id: int
    msg_id: int

    def send(self, outcome: Outcome) -> None:
        self.connection.send(Frame(self.sequence_id, DeliverResp(self.msg_id, ANSWER_RESULT[outcome])))


@dataclass(frozen=True, slots=True)
class InPart:
    """One part of a citizen's message, as the reassembler holds it."""

    msg_id: int
    msg_fmt: int
    body: bytes
    answers: tuple[Answer, ...]

    @property
    def digest(self) -> str:
        """What the part held (a redelivered part has the same)."""
        return part_digest(TEXT_CODINGS[self.msg_fmt], self.body)


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
# The link


class _Wire:
    """CMPP as the shared connection writes and reads it."""

    def __init__(self) -> None:
        self._decoder = Decoder()

    def encode(self, message: Frame) -> bytes:
        return encode(message)

    def sequence_of(self, message: Frame) -> int:
        return message.sequence_id

    def name_of(self, message: Frame) -> str:
        return command_name(message.pdu.COMMAND)

    def feed(self, data: bytes) -> None:
        self._decoder.feed(data)

    def next_message(self) -> Frame | None:
        return self._decoder.next_frame()


def _answers(response: type[Pdu]) -> Callable[[Frame], bool]:
    """A response of this type (a Sequence_Id the ISMG repeats on something else is no answer)."""
    return lambda frame: isinstance(frame.pdu, response)


class CmppLink(Session[CmppSettings, Frame, InPart]):
    """An `SmsLink` speaking CMPP 3.0 as an SP to one ISMG (see the module's docstring)."""

    PROTOCOL = "CMPP"
    PEER = "the ISMG"
    LOGIN = "login"
    THROTTLED = "flow control"
    MAX_SEQUENCE = 0xFFFFFFFF  # 1 .. 2**32-1, then 1 again

    def __init__(
        self,
        settings: CmppSettings,
        on_message: OnMessage,
        on_receipt: OnReceipt,
        *,
        now: Callable[[], datetime] = datetime.now,
    ) -> None:
        super().__init__(
            settings,
            on_message,
            on_receipt,
            log,
            merge=merged,
            whole=message_of,
            keep_alive=settings.active_test_interval,
            tries=settings.tries,
        )
        self._now = now  # the ISMG's local time is the authenticator's timestamp

    async def submit(self, sms: OutboundSms) -> Submitted:
        self._refuse_when_stopping()
        try:
            submits = submits_for(self._settings, sms, next(self._refs) % 256)
        except ValueError as error:
            raise SmsRejected(f"the reply cannot be sent as SMS: {error}", transient=False) from None
        sends = [functools.partial(self._send_part, submit) for submit in submits]
        tasks = [asyncio.create_task(self._in_window(send, self._settings.tries)) for send in sends]
        try:
            ids = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return Submitted(tuple(ids))

    async def _send_part(self, submit: Submit, connection: Connection[Frame]) -> str | None:
        """One SUBMIT (sent again by the connection, C times in all): its Msg_Id, None on flow control."""
        try:
            frame = await connection.request(Frame(self._next_sequence(), submit), _answers(SubmitResp))
        except NoResponse as error:
            raise SmsRejected(str(error), transient=True) from None
        response = frame.pdu
        assert isinstance(response, SubmitResp)  # what _answers accepts
        if response.result == Result.OK:
            return format_msg_id(response.msg_id)
        if response.result == Result.FLOW_CONTROL:
            return None
        self._status.counts["rejected"] += 1
        raise SmsRejected(f"the ISMG refused the SUBMIT: Result {_result_name(response.result)}", transient=False)

    # --- the session's hooks ---------------------------------------------------------------

    def _wire(self) -> _Wire:
        return _Wire()

    async def _log_in(self, connection: Connection[Frame]) -> None:
        settings = self._settings
        timestamp = timestamp_of(self._now())
        source = authenticator_source(settings.sp_id, settings.secret, timestamp)
        sequence_id = self._next_sequence()
        connection.send(Frame(sequence_id, Connect(settings.sp_id, source, VERSION, timestamp)))
        frame = await connection.first(self.PEER, "CMPP_CONNECT_RESP")
        if not isinstance(frame.pdu, ConnectResp) or frame.sequence_id != sequence_id:
            raise ConnectionLost(f"the ISMG answered CMPP_CONNECT with {command_name(frame.pdu.COMMAND)}")
        if frame.pdu.status != ConnectStatus.OK:
            raise LoginRefused(f"the ISMG refused the login: Status {_status_name(frame.pdu.status)}")
        if frame.pdu.authenticator != authenticator_ismg(frame.pdu.status, source, settings.secret):
            raise LoginRefused("the ISMG's AuthenticatorISMG is wrong (not the shared secret we hold?)")

    def _logged_in(self) -> str:
        return f"logged in to {self._settings.host}:{self._settings.port} as SP {self._settings.sp_id}"

    async def _keep_alive_request(self, connection: Connection[Frame]) -> None:
        await connection.request(Frame(self._next_sequence(), ActiveTest()), _answers(ActiveTestResp))

    async def _goodbye(self, connection: Connection[Frame]) -> None:
        await connection.request(Frame(self._next_sequence(), Terminate()), _answers(TerminateResp))

    def _answer_malformed(self, connection: Connection[Frame], error: SmsDecodeError) -> str:
        assert isinstance(error, CmppDecodeError)  # the CMPP decoder's
        answer = error_response(error)
        if answer is None:
            return f"Sequence_Id {error.sequence_id}: dropped"
        connection.send(answer)
        return f"Sequence_Id {error.sequence_id}: answered {command_name(answer.pdu.COMMAND)}"

    def _handle(self, connection: Connection[Frame], frame: Frame) -> None:
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
            self._unexpected(command_name(pdu.COMMAND), "dropped")

    # --- inbound ---------------------------------------------------------------------------

    def _on_deliver(self, connection: Connection[Frame], sequence_id: int, deliver: Deliver) -> None:
        answer = Answer(connection, sequence_id, deliver.msg_id)
        if self._busy(answer):
            return
        if deliver.registered_delivery:
            receipt = receipt_of(StatusReport.parse(deliver.msg_content))  # its length was checked
            call = functools.partial(self._on_receipt, receipt)
            self._hand_over(deliver.src_terminal_id, call, (answer,), "receipts_in")
        else:
            self._add_part(answer, deliver.src_terminal_id, "DELIVER", lambda: inbound_part(deliver, answer))


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
