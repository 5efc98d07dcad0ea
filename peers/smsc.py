"""A faithful SMSC speaking SMPP 3.4 over real TCP: a test fixture, not product. Tests and benchmarks
drive it in-process (`Smsc`); `make run` can start it as a program beside the gateway:

    python -m peers.smsc serve --listen 127.0.0.1:2775 --account hotline:PASSWORD [--control 127.0.0.1:2776]
    python -m peers.smsc send --from 13800138000 --to 12345 --text 你好 [--control 127.0.0.1:2776]

What it does, as an SMSC does:
- Binds: bind_transceiver with a system_id of `accounts` and its password (else ESME_RINVSYSID or
  ESME_RINVPASWD; the refusal is answered, then the connection closed); a second bind on a bound
  connection gets ESME_RALYBND; bind_transmitter and bind_receiver get ESME_RBINDFAIL (this SMSC
  serves transceivers only). Before a bind, any request but enquire_link gets generic_nack
  ESME_RINVBNDSTS.
- submit_sm: answered with a fresh message id (hex); the parts are joined (UDH, 8- or 16-bit
  reference, or SAR TLVs), decoded and recorded per destination (`messages_to` awaits them); a
  receipt follows when `auto_receipt` is set (DELIVRD or UNDELIV), or on demand (`receipt`), with
  10- or 12-digit dates (`receipt_seconds`), the Appendix B text and the receipted_message_id and
  message_state TLVs.
- deliver_sm: `deliver` splits a text into parts (8- or 16-bit UDH, other UDH elements before the
  concatenation element if asked, or SAR TLVs) and sends them in any order asked; a deliver_sm
  whose response is an error, or does not come within `response_timeout`, is sent again (a new
  sequence number, the same content) after `redeliver_delay`, up to `max_deliveries` times; a lost
  connection keeps them for the next bind.
- enquire_link is answered (and sent on demand: `enquire_link`); unbind is answered and noted.
- On demand: throttling (`throttle(n)`: ESME_RTHROTTLED for the next n submit_sm), other refusals
  (`fail_submits`), a dropped connection (`drop()` now, `drop_on_submit()` when the next submit_sm
  arrives, unanswered and unrecorded; `drop_after_answers(n)` once n deliver_sm_resp were read, the
  rest of what came with them lost), submits left unanswered (`swallow(n)`), malformed bytes
  (`send_malformed(kind)`, which awaits and returns the generic_nack).

Every wait is awaitable and bounded (`until`); nothing here sleeps to synchronise.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, TypeVar

from aiohttp import web

from gateway.channels.sms import smpp, text
from gateway.channels.sms.smpp import (
    HEADER,
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    DeliverSm,
    DeliverSmResp,
    EnquireLink,
    EnquireLinkResp,
    GenericNack,
    Pdu,
    SmppDecodeError,
    Status,
    SubmitSm,
    SubmitSmResp,
    Tag,
    Tlv,
    Unbind,
    UnbindResp,
    encode,
)
from peers.sms_peer import (
    LOOPBACK,
    MAX_RECORDED,
    Client,
    Owed,
    PeerServer,
    ProgramSpec,
    program_main,
    serve_program,
)

log = logging.getLogger("peers.smsc")

Concat = Literal["udh8", "udh16", "sar"]
Malformed = Literal["unknown_command", "bad_length", "truncated", "no_nul", "overlong", "fatal_length"]
RECEIPT_STATES = {"DELIVRD": 2, "UNDELIV": 5, "EXPIRED": 3, "REJECTD": 8}
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Bind:
    system_id: str
    command: str  # bind_transceiver, bind_transmitter, bind_receiver
    status: int


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A whole outbound message as the handset would show it."""

    dest: str
    source: str
    text: str
    parts: tuple[SubmitSm, ...]  # in part order
    message_ids: tuple[str, ...]  # the id this SMSC gave each part


_Outgoing = Owed[str, DeliverSm]  # a deliver_sm owed to a system_id, named as `deliver`/`receipt` say


class _Client(Client[str, DeliverSm]):
    """An ESME's connection (`account`: its system_id once bound)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.decoder = smpp.Decoder()

    def send(self, pdu: Pdu) -> None:
        if not self.closed:
            self.writer.write(encode(pdu))


class Smsc(PeerServer[ReceivedMessage, str, DeliverSm, _Client]):
    """The SMSC (see the module). `async with Smsc({"hotline": "secret"}) as smsc:` listens on a
    free loopback port (`smsc.port`)."""

    NAME = "SMSC"
    CLIENT = "ESME"

    def __init__(
        self,
        accounts: Mapping[str, str],
        *,
        host: str = LOOPBACK,
        port: int = 0,
        auto_receipt: Literal["DELIVRD", "UNDELIV"] | None = None,
        receipt_seconds: bool = False,
        response_timeout: float = 60.0,
        redeliver_delay: float = 0.0,
        max_deliveries: int = 5,
        now: Callable[[], datetime] = datetime.now,
        echo: bool = False,
    ) -> None:
        super().__init__(
            host,
            port,
            dict(accounts),
            response_timeout=response_timeout,
            redeliver_delay=redeliver_delay,
            max_deliveries=max_deliveries,
            window=None,  # an SMSC sends what it has; the ESME answers each in its time
            echo=echo,
        )
        self.auto_receipt = auto_receipt
        self.receipt_seconds = receipt_seconds
        self._now = now
        self._message_ids = itertools.count(0x1000)
        self._sequences = itertools.count(1)
        self._names = itertools.count(1)
        self._refs = itertools.count(0x1201)  # 16-bit references with a high byte, as carriers use
        self._reassembler: text.Reassembler[tuple[SubmitSm, str, bytes]] = text.Reassembler(timeout=3600.0)
        # What it saw, for tests.
        self.binds: list[Bind] = []
        self.pdus: deque[Pdu] = deque(maxlen=MAX_RECORDED)  # every PDU an ESME sent, in order
        self.submits: dict[str, SubmitSm] = {}  # message id -> the part it names
        self.unbinds = 0

    # --- awaiting what it saw (`until`, `messages_to`, `results_of` by delivery name: PeerServer) ----

    async def bound_attempts(self, count: int = 1, timeout: float = 10.0) -> list[Bind]:
        """The first `count` bind attempts (accepted or not), once they happened."""
        return await self.until(lambda: self.binds[:count] if len(self.binds) >= count else None, timeout)

    def received(self, kind: type[T]) -> list[T]:
        """The PDUs of one kind an ESME sent (EnquireLink, GenericNack, Unbind...)."""
        return [pdu for pdu in self.pdus if isinstance(pdu, kind)]

    # --- acting on demand ----------------------------------------------------------------------

    async def deliver(
        self,
        source: str,
        dest: str,
        content: str,
        *,
        order: Sequence[int] | None = None,
        concat: Concat = "udh8",
        extra_udh: bytes = b"",
        system_id: str | None = None,
    ) -> list[str]:
        """Send a citizen's message (GSM or UCS-2, in parts when long) in the part order given (part
        numbers from 1; all of them by default; a part not named is never sent). `extra_udh`: UDH
        elements put before the concatenation element. The names of its parts' deliveries, in
        part order."""
        pdus = deliver_sms(source, dest, content, next(self._refs) & 0xFFFF, concat=concat, extra_udh=extra_udh)
        order = order or range(1, len(pdus) + 1)
        if len(set(order)) != len(order) or not set(order) <= set(range(1, len(pdus) + 1)):
            raise ValueError(f"the order names parts of 1..{len(pdus)}, each at most once")
        names = [f"deliver-{next(self._names)}" for _ in pdus]
        for number in order:
            name = names[number - 1]
            self._queue(_Outgoing(system_id or self._only_account(), name, pdus[number - 1], name))
        await self.notify()
        return names

    def receipt(self, message_id: str, stat: str = "DELIVRD", *, tlvs: bool = True) -> str:
        """A delivery receipt on the submit_sm that got `message_id`; the name of its delivery."""
        submit = self.submits[message_id]
        fmt = "%y%m%d%H%M%S" if self.receipt_seconds else "%y%m%d%H%M"
        stamp = self._now().strftime(fmt)
        delivered = "001" if stat == "DELIVRD" else "000"
        error = "000" if stat == "DELIVRD" else "001"
        body = (
            f"id:{message_id} sub:001 dlvrd:{delivered} submit date:{stamp} done date:{stamp} "
            f"stat:{stat} err:{error} text:"
        )
        state = RECEIPT_STATES.get(stat, 7)  # 7: UNKNOWN
        extra = (
            (Tlv(Tag.RECEIPTED_MESSAGE_ID, message_id.encode() + b"\x00"), Tlv(Tag.MESSAGE_STATE, bytes([state])))
            if tlvs
            else ()
        )
        pdu = DeliverSm(
            sequence=0,
            source_addr=submit.destination_addr,
            destination_addr=submit.source_addr,
            esm_class=smpp.ESM_RECEIPT,
            short_message=body.encode("ascii"),
            tlvs=extra,
        )
        name = f"receipt-{next(self._names)}"
        self._queue(_Outgoing(self._only_account(), name, pdu, name))
        return name

    def throttle(self, count: int) -> None:
        """Answer the next `count` submit_sm with ESME_RTHROTTLED."""
        self.fail_submits(Status.ESME_RTHROTTLED, count)

    async def send_malformed(self, kind: Malformed, timeout: float = 10.0) -> GenericNack:
        """Send malformed bytes (`malformed`) to the bound ESME; the generic_nack it answered."""
        sequence = self._next_sequence()
        return await self._round_trip(sequence, malformed(kind, sequence), timeout, GenericNack)

    async def enquire_link(self, timeout: float = 10.0) -> Pdu:
        """An enquire_link round trip with the ESME (what it sent before answering has arrived);
        its answer."""
        sequence = self._next_sequence()
        return await self._round_trip(sequence, encode(EnquireLink(sequence=sequence)), timeout, Pdu)

    async def unbind(self, timeout: float = 10.0) -> Pdu:
        """Unbind the ESME, as an SMSC going down for maintenance does; its answer."""
        sequence = self._next_sequence()
        return await self._round_trip(sequence, encode(Unbind(sequence=sequence)), timeout, Pdu)

    # --- serving a connection --------------------------------------------------------------

    def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Client:
        return _Client(reader, writer)

    def _next_sequence(self) -> int:
        return next(self._sequences)

    def _write(self, client: _Client, sequence: int, delivery: DeliverSm) -> None:
        client.send(replace(delivery, sequence=sequence))

    async def _received(self, client: _Client, data: bytes) -> None:
        client.decoder.feed(data)
        while not client.closed:
            try:
                pdu = client.decoder.next_pdu()
            except SmppDecodeError as error:
                log.warning("SMSC: malformed PDU from the ESME: %s", error)
                nack = smpp.error_response(error)
                if nack is not None:
                    client.send(nack)
                if error.fatal:
                    self._close(client)
                continue
            if pdu is None:
                break
            self.pdus.append(pdu)
            self._handle(client, pdu)
            await self.notify()

    def _handle(self, client: _Client, pdu: Pdu) -> None:
        if isinstance(pdu, BindTransceiver | BindTransmitter | BindReceiver):
            self._bind(client, pdu)
        elif isinstance(pdu, EnquireLink):
            client.send(EnquireLinkResp(sequence=pdu.sequence))
        elif smpp.is_response(pdu.COMMAND) and pdu.sequence in client.requests:
            client.requests.pop(pdu.sequence).set_result(pdu)
            if isinstance(pdu, UnbindResp):
                self._close(client)
        elif client.account is None:
            if not smpp.is_response(pdu.COMMAND):
                client.send(GenericNack(sequence=pdu.sequence, status=Status.ESME_RINVBNDSTS))
        elif isinstance(pdu, SubmitSm):
            self._on_submit(client, pdu)
        elif isinstance(pdu, DeliverSmResp):
            self._answered(client, pdu.sequence, pdu.status)
        elif isinstance(pdu, Unbind):
            self.unbinds += 1
            client.send(UnbindResp(sequence=pdu.sequence))
            self._close(client)
        elif not smpp.is_response(pdu.COMMAND):
            client.send(GenericNack(sequence=pdu.sequence, status=Status.ESME_RINVCMDID))

    def _bind(self, client: _Client, bind: BindTransceiver | BindTransmitter | BindReceiver) -> None:
        if client.account is not None:
            status: int = Status.ESME_RALYBND
        elif not isinstance(bind, BindTransceiver):
            status = Status.ESME_RBINDFAIL
        elif bind.system_id not in self.accounts:
            status = Status.ESME_RINVSYSID
        elif self.accounts[bind.system_id] != bind.password:
            status = Status.ESME_RINVPASWD
        else:
            status = Status.ESME_ROK
        self.binds.append(Bind(bind.system_id, bind.COMMAND.name.lower(), status))
        client.send(_bind_response(bind, status))
        if status == Status.ESME_RALYBND:
            return
        if status != Status.ESME_ROK:
            log.info("SMSC: %s of %s refused: %s", bind.COMMAND.name.lower(), bind.system_id, smpp.status_name(status))
            self._close(client)
            return
        client.account = bind.system_id
        self._flush(bind.system_id)

    def _on_submit(self, client: _Client, submit: SubmitSm) -> None:
        if self._lost_on_the_way(client):
            return
        if (status := self._failure()) is not None:
            client.send(SubmitSmResp(sequence=submit.sequence, status=status))
            return
        message_id = f"{next(self._message_ids):08x}"
        client.send(SubmitSmResp(sequence=submit.sequence, message_id=message_id))
        self.submits[message_id] = submit
        self._record(submit, message_id)
        if self.auto_receipt is not None and submit.registered_delivery & smpp.REGISTERED_DELIVERY_FINAL:
            self.receipt(message_id, self.auto_receipt)  # written after the submit_sm_resp, as receipts come

    def _record(self, submit: SubmitSm, message_id: str) -> None:
        body, ref, total, seq = submit.short_message, 0, 1, 1
        if submit.esm_class & smpp.ESM_UDHI:
            udh, body = text.parse_udh(body)
            if udh is not None:
                ref, total, seq = udh.ref, udh.total, udh.seq
        elif (sar := smpp.sar_of(submit)) is not None:
            ref, total, seq = sar
        key = text.PartKey(submit.source_addr, submit.destination_addr, ref, total)
        done = self._reassembler.add(key, seq, (submit, message_id, body), 0.0)
        if done is not None:
            parts = done.parts
            message = ReceivedMessage(
                dest=submit.destination_addr,
                source=submit.source_addr,
                text=text.decode_parts([(part.data_coding, body) for part, _, body in parts]),
                parts=tuple(part for part, _, _ in parts),
                message_ids=tuple(message_id for _, message_id, _ in parts),
            )
            self.messages.append(message)
            self._echo(message.dest, len(message.parts), message.text)


def _bind_response(bind: BindTransceiver | BindTransmitter | BindReceiver, status: int) -> Pdu:
    system_id = "" if status else "SMSC"
    if isinstance(bind, BindTransceiver):
        return BindTransceiverResp(sequence=bind.sequence, status=status, system_id=system_id)
    if isinstance(bind, BindTransmitter):
        return BindTransmitterResp(sequence=bind.sequence, status=status, system_id=system_id)
    return BindReceiverResp(sequence=bind.sequence, status=status, system_id=system_id)


def deliver_sms(source: str, dest: str, content: str, ref: int, *, concat: Concat, extra_udh: bytes) -> list[DeliverSm]:
    """The deliver_sm that carry a citizen's text, in part order (sequence numbers 0: set when sent)."""
    parts = text.encode(content, ref & 0xFF)
    pdus = []
    for part in parts:
        long = part.total > 1
        if concat == "sar" and long:
            short_message, esm_class, tlvs = part.payload, 0, smpp.sar_tlvs(ref, part.total, part.seq)
        elif long or extra_udh:
            concat_element = (
                bytes([8, 4, ref >> 8, ref & 0xFF, part.total, part.seq])
                if concat == "udh16"
                else bytes([0, 3, ref & 0xFF, part.total, part.seq])
            )
            header = extra_udh + (concat_element if long else b"")
            short_message, esm_class, tlvs = bytes([len(header)]) + header + part.payload, smpp.ESM_UDHI, ()
        else:
            short_message, esm_class, tlvs = part.payload, 0, ()
        pdus.append(
            DeliverSm(
                sequence=0,
                source_addr=source,
                destination_addr=dest,
                esm_class=esm_class,
                data_coding=part.data_coding,
                short_message=short_message,
                tlvs=tlvs,
            )
        )
    return pdus


def malformed(kind: Malformed, sequence: int) -> bytes:
    """Bytes that are not a PDU an ESME can read, each with a readable header and this sequence
    number: an unknown command id; an enquire_link longer than its (empty) body; a deliver_sm cut
    short inside its fields; a deliver_sm whose last C-string has no NUL; a source_addr over its 21
    bytes; a command_length below the header's size (the stream cannot be framed again)."""

    def frame(command_id: int, body: bytes, length: int | None = None) -> bytes:
        return HEADER.pack(length if length is not None else 16 + len(body), command_id, 0, sequence) + body

    deliver = smpp.Command.DELIVER_SM
    if kind == "unknown_command":
        return frame(0x000000AA, b"\xde\xad\xbe\xef")
    if kind == "bad_length":
        return frame(smpp.Command.ENQUIRE_LINK, b"\x00\x00\x00\x00")
    if kind == "truncated":
        return frame(deliver, b"\x00\x01\x01" + b"13800138000\x00" + b"\x00\x01")  # ends inside the destination
    if kind == "no_nul":
        return frame(deliver, b"\x00\x01\x01" + b"1380013")
    if kind == "overlong":
        return frame(deliver, b"\x00\x01\x01" + b"1" * 30 + b"\x00" + bytes(20))
    return frame(deliver, b"", length=8)


# --- the program -----------------------------------------------------------------------------


def _account(value: str) -> tuple[str, str]:
    system_id, _, password = value.partition(":")
    if not system_id or len(system_id) > 15 or len(password) > 8:
        raise argparse.ArgumentTypeError("ID:PASSWORD expected (a system_id of at most 15, a password of at most 8)")
    return system_id, password


async def _serve_program(args: argparse.Namespace) -> None:
    smsc = Smsc(dict(args.account), host=args.listen[0], port=args.listen[1], auto_receipt=args.receipt, echo=True)

    async def deliver(request: web.Request) -> web.Response:
        body = await request.json()
        names = await smsc.deliver(str(body["from"]), str(body["to"]), str(body["text"]))
        statuses = [(await smsc.results_of(name, timeout=30.0))[0] for name in names]
        return web.json_response({"parts": len(names), "statuses": [smpp.status_name(s) for s in statuses]})

    async def messages(_: web.Request) -> web.Response:
        found = [
            {"dest": m.dest, "source": m.source, "text": m.text, "message_ids": list(m.message_ids)}
            for m in smsc.messages
        ]
        return web.json_response(found)

    routes = [web.post("/deliver", deliver), web.get("/messages", messages)]
    await serve_program(smsc, routes, args.control, "smsc (SMPP 3.4)")


PROGRAM = ProgramSpec(
    name="smsc",
    description="An SMPP 3.4 SMSC for tests and demos.",
    wire="SMPP",
    clients="ESMEs",
    port=2775,
    account=_account,
    account_help="ID:PASSWORD (repeatable)",
    receipts="--receipt",
    to_help="the hotline's SMS number (12345)",
)


def main(argv: Sequence[str] | None = None) -> int:
    return program_main(PROGRAM, argv, _serve_program)


if __name__ == "__main__":
    sys.exit(main())
