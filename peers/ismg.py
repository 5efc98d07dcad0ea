"""A faithful ISMG (China Mobile's Internet Short Message Gateway) speaking CMPP 3.0 over real TCP:
a test fixture, not product. Tests and benchmarks drive it in-process (`Ismg`); `make run` can start
it as a program beside the gateway:

    python -m peers.ismg serve --listen 127.0.0.1:7890 --account 901234:SECRET [--control 127.0.0.1:7891]
    python -m peers.ismg send --from 13800138000 --to 106353112345 --text 你好 [--control 127.0.0.1:7891]

What it does, as a carrier's ISMG does:
- CMPP_CONNECT: the SP's id must be one of `accounts` (else Status 2) and its AuthenticatorSource
  the MD5 of that account's secret (else Status 3); a Version above 3.0 gets Status 4. A refused
  login is answered, then the connection closed. Its AuthenticatorISMG is computed as the spec says.
- CMPP_SUBMIT: answered with a fresh Msg_Id (a retransmission, the same Sequence_Id on the same
  connection, gets the same answer and is recorded once); the parts are joined (UDH or
  Pk_total/Pk_number) and recorded, decoded to text, per destination (`messages_to` awaits them);
  a status report follows when `auto_report` is set (DELIVRD or UNDELIV), or on demand (`report`).
- CMPP_DELIVER: `deliver` splits a text into UDH parts and sends them in any order asked (or only
  some of them), at most `window` awaiting their answer; a DELIVER whose answer is an error, or
  does not come within `response_timeout`, is sent again (the same Msg_Id, a new Sequence_Id) up
  to `max_deliveries` times; a lost connection keeps them for the next login.
- CMPP_ACTIVE_TEST is answered (unless `mute_active_test`); CMPP_TERMINATE is answered and noted
  (`terminated`); `active_test()` is a round trip a test can use as a barrier.
- On demand: flow control (`throttle(n)`: Result 8 for the next n SUBMITs; `fail_submits` for any
  other Result), a dropped connection (`drop()` now, `drop_on_submit()` when the next SUBMIT
  arrives, unanswered; `drop_after_answers(n)` once n DELIVER_RESPs were read, the rest of what
  came with them lost), a SUBMIT left unanswered (`swallow(n)`), malformed bytes (`send_raw`, with
  `malformed(kind)` to build them).

Every wait is awaitable and bounded (`until` and the views built on it); nothing here sleeps to
synchronise.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, TypeVar

from aiohttp import web

from gateway.channels.sms import text
from gateway.channels.sms.cmpp import (
    HEADER,
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
    MsgIdParts,
    Result,
    StatusReport,
    Submit,
    SubmitResp,
    Terminate,
    TerminateResp,
    authenticator_ismg,
    authenticator_source,
    encode,
    error_response,
    format_msg_id,
)
from gateway.channels.sms.cmpp_session import TEXT_CODINGS
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

log = logging.getLogger("peers.ismg")

Malformed = Literal["unknown_command", "truncated_deliver", "bad_length"]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Login:
    sp_id: str
    status: int


@dataclass(frozen=True, slots=True)
class ReceivedMessage:
    """A whole outbound message as the handset would show it."""

    dest: str
    source: str  # Src_Id: the number it comes from
    text: str
    parts: tuple[Submit, ...]  # in part order
    msg_ids: tuple[str, ...]  # the Msg_Id this ISMG gave each part (as the gateway names them)


_Outgoing = Owed[int, Deliver]  # a DELIVER owed to an SP, named by its Msg_Id


def _owed(sp_id: str, deliver: Deliver) -> _Outgoing:
    return Owed(sp_id, deliver.msg_id, deliver, f"DELIVER {format_msg_id(deliver.msg_id)}")


class _Client(Client[int, Deliver]):
    """An SP's connection (`account`: its SP id once logged in)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.decoder = Decoder()
        self.answered: dict[int, SubmitResp] = {}  # Sequence_Id -> answer (retransmissions)

    def send(self, frame: Frame) -> None:
        if not self.closed:
            self.writer.write(encode(frame))


class Ismg(PeerServer[ReceivedMessage, int, Deliver, _Client]):
    """The ISMG (see the module). `async with Ismg({"901234": "secret"}) as ismg:` listens on a free
    loopback port (`ismg.port`)."""

    NAME = "ISMG"
    CLIENT = "SP"

    def __init__(
        self,
        accounts: Mapping[str, str],
        *,
        host: str = LOOPBACK,
        port: int = 0,
        ismg_code: int = 12345,
        auto_report: Literal["DELIVRD", "UNDELIV"] | None = None,
        response_timeout: float = 60.0,
        redeliver_delay: float = 0.0,
        max_deliveries: int = 5,
        window: int = 16,
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
            window=window,
            echo=echo,
        )
        self.auto_report = auto_report
        self._ismg_code = ismg_code
        self._now = now
        self._msg_sequence = itertools.count(1)
        self._sequence_ids = itertools.count(1)
        self._refs = itertools.count(1)
        self._reassembler: text.Reassembler[tuple[Submit, int]] = text.Reassembler(timeout=3600.0)
        self.mute_active_test = False  # True: the SP's ACTIVE_TESTs go unanswered
        # What it saw, for tests.
        self.logins: list[Login] = []
        self.frames: deque[Frame] = deque(maxlen=MAX_RECORDED)  # every frame an SP sent, in order
        self.submits: dict[int, Submit] = {}  # Msg_Id -> the part it named
        self.terminated = asyncio.Event()

    # --- awaiting what it saw (`until`, `messages_to`, `results_of` by Msg_Id: PeerServer) --------

    async def logged_in(self, count: int = 1, timeout: float = 10.0) -> list[Login]:
        """The first `count` login attempts (accepted or not), once they happened."""
        return await self.until(lambda: self.logins[:count] if len(self.logins) >= count else None, timeout)

    # --- acting on demand ----------------------------------------------------------------------

    async def deliver(
        self,
        source: str,
        dest: str,
        content: str,
        *,
        order: Sequence[int] | None = None,
        sp_id: str | None = None,
    ) -> list[int]:
        """Send a citizen's message (UCS-2, UDH parts when long) in the part order given (part
        numbers from 1; all of them by default; a part not named is never sent). The Msg_Ids of
        all its parts, in part order."""
        parts = text.encode(content, next(self._refs) % 256, allow_gsm=False)
        delivers = [
            Deliver(
                msg_id=self._new_msg_id(),
                dest_id=dest,
                src_terminal_id=source,
                msg_fmt=MsgFmt.UCS2,
                msg_content=part.short_message,
                tp_udhi=1 if part.udh else 0,
            )
            for part in parts
        ]
        order = order or range(1, len(delivers) + 1)
        if len(set(order)) != len(order) or not set(order) <= set(range(1, len(delivers) + 1)):
            raise ValueError(f"the order names parts of 1..{len(delivers)}, each at most once")
        for number in order:
            self._queue(_owed(sp_id or self._only_account(), delivers[number - 1]))
        await self.notify()
        return [deliver.msg_id for deliver in delivers]

    def report(self, msg_id: int, stat: str = "DELIVRD") -> int:
        """A status report on the SUBMIT that got `msg_id`; the report's own Msg_Id."""
        submit = self.submits[msg_id]
        stamp = self._now().strftime("%y%m%d%H%M")
        report = StatusReport(msg_id, stat, stamp, stamp, submit.dest_terminal_ids[0], next(self._msg_sequence))
        deliver = Deliver(
            msg_id=self._new_msg_id(),
            dest_id=submit.src_id,
            src_terminal_id=submit.dest_terminal_ids[0],
            msg_fmt=MsgFmt.ASCII,
            msg_content=report.serialize(),
            registered_delivery=1,
        )
        self._queue(_owed(submit.msg_src, deliver))
        return deliver.msg_id

    def throttle(self, count: int) -> None:
        """Answer the next `count` SUBMITs with Result 8 (flow control)."""
        self.fail_submits(Result.FLOW_CONTROL, count)

    def malformed(self, kind: Malformed, sequence_id: int = 0x7E57) -> bytes:
        """Bytes that are not a CMPP PDU: an unknown Command_Id, a DELIVER cut short (its header says
        so), or a Total_Length below the header's size."""
        if kind == "unknown_command":
            return HEADER.pack(16, 0x00000077, sequence_id) + b"\xde\xad\xbe\xef"
        if kind == "truncated_deliver":
            body = self._new_msg_id().to_bytes(8, "big") + b"10635311" + bytes(8)  # ends inside Dest_Id
            return HEADER.pack(12 + len(body), 0x00000005, sequence_id) + body
        return HEADER.pack(5, 0x00000005, sequence_id)

    async def active_test(self, timeout: float = 10.0) -> None:
        """A CMPP_ACTIVE_TEST round trip with the SP: what it sent before answering has arrived."""
        sequence_id = self._next_sequence()
        await self._round_trip(sequence_id, encode(Frame(sequence_id, ActiveTest())), timeout, ActiveTestResp)

    # --- serving a connection --------------------------------------------------------------

    def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> _Client:
        return _Client(reader, writer)

    def _next_sequence(self) -> int:
        return next(self._sequence_ids)

    def _write(self, client: _Client, sequence: int, delivery: Deliver) -> None:
        client.send(Frame(sequence, delivery))

    async def _received(self, client: _Client, data: bytes) -> None:
        client.decoder.feed(data)
        while not client.closed:
            try:
                frame = client.decoder.next_frame()
            except CmppDecodeError as error:
                log.warning("ISMG: malformed PDU from the SP: %s", error)
                answer = error_response(error)
                if answer is not None:
                    client.send(answer)
                if error.fatal:
                    self._close(client)
                continue
            if frame is None:
                break
            self.frames.append(frame)
            self._handle(client, frame)
            await self.notify()

    def _handle(self, client: _Client, frame: Frame) -> None:
        pdu = frame.pdu
        if isinstance(pdu, Connect):
            self._log_in(client, frame.sequence_id, pdu)
        elif client.account is None:
            log.warning("ISMG: %s before CMPP_CONNECT; closing", type(pdu).__name__)
            self._close(client)
        elif isinstance(pdu, Submit):
            self._on_submit(client, frame.sequence_id, pdu)
        elif isinstance(pdu, DeliverResp):
            self._answered(client, frame.sequence_id, pdu.result)
        elif isinstance(pdu, ActiveTest) and not self.mute_active_test:
            client.send(Frame(frame.sequence_id, ActiveTestResp()))
        elif isinstance(pdu, Terminate):
            self.terminated.set()
            client.send(Frame(frame.sequence_id, TerminateResp()))
            self._close(client)
        elif isinstance(pdu, ActiveTestResp) and frame.sequence_id in client.requests:
            client.requests.pop(frame.sequence_id).set_result(pdu)

    def _log_in(self, client: _Client, sequence_id: int, connect: Connect) -> None:
        secret = self.accounts.get(connect.source_addr)
        if secret is None:
            status = ConnectStatus.BAD_SOURCE_ADDR
        elif connect.authenticator != authenticator_source(connect.source_addr, secret, connect.timestamp):
            status = ConnectStatus.AUTH_FAILED
        elif connect.version > VERSION:
            status = ConnectStatus.VERSION_TOO_HIGH
        else:
            status = ConnectStatus.OK
        self.logins.append(Login(connect.source_addr, status))
        if secret is None or status != ConnectStatus.OK:
            client.send(Frame(sequence_id, ConnectResp(status, bytes(16), VERSION)))
            log.info("ISMG: login of SP %s refused with Status %d", connect.source_addr, status)
            self._close(client)
            return
        answer = authenticator_ismg(status, connect.authenticator, secret)
        client.send(Frame(sequence_id, ConnectResp(status, answer, VERSION)))
        client.account = connect.source_addr
        self._flush(connect.source_addr)

    def _on_submit(self, client: _Client, sequence_id: int, submit: Submit) -> None:
        if self._lost_on_the_way(client):
            return
        if sequence_id in client.answered:  # a retransmission: the same answer, recorded once
            client.send(Frame(sequence_id, client.answered[sequence_id]))
            return
        if (result := self._failure()) is not None:
            client.send(Frame(sequence_id, SubmitResp(0, result)))
            return
        answer = SubmitResp(self._new_msg_id(), Result.OK)
        client.answered[sequence_id] = answer
        client.send(Frame(sequence_id, answer))
        self.submits[answer.msg_id] = submit
        self._record(submit, answer.msg_id)
        if self.auto_report is not None:  # written after the SUBMIT_RESP, as an ISMG's reports come
            self.report(answer.msg_id, self.auto_report)

    def _record(self, submit: Submit, msg_id: int) -> None:
        ref, total, seq = 0, submit.pk_total, submit.pk_number
        if submit.tp_udhi:
            udh, _ = text.parse_udh(submit.msg_content)
            if udh is not None:
                ref, total, seq = udh.ref, udh.total, udh.seq
        for dest in submit.dest_terminal_ids:
            key = text.PartKey(submit.src_id, dest, ref, total)
            done = self._reassembler.add(key, seq, (submit, msg_id), 0.0)
            if done is not None:
                message = _message(dest, done.parts)
                self.messages.append(message)
                self._echo(message.dest, len(message.parts), message.text)

    def _new_msg_id(self) -> int:
        now = self._now()
        return MsgIdParts(
            now.month, now.day, now.hour, now.minute, now.second, self._ismg_code, next(self._msg_sequence) & 0xFFFF
        ).value()


def _message(dest: str, parts: tuple[tuple[Submit, int], ...]) -> ReceivedMessage:
    """A whole message from its parts (each the SUBMIT and the Msg_Id it got)."""
    coded = []
    for submit, _ in parts:
        body = text.parse_udh(submit.msg_content)[1] if submit.tp_udhi else submit.msg_content
        coded.append((TEXT_CODINGS.get(submit.msg_fmt, text.LATIN1), body))
    first = parts[0][0]
    return ReceivedMessage(
        dest=dest,
        source=first.src_id,
        text=text.decode_parts(coded),
        parts=tuple(submit for submit, _ in parts),
        msg_ids=tuple(format_msg_id(msg_id) for _, msg_id in parts),
    )


# --- the program -----------------------------------------------------------------------------


def _account(value: str) -> tuple[str, str]:
    sp_id, _, secret = value.partition(":")
    if not sp_id or not secret or len(sp_id) > 6:
        raise argparse.ArgumentTypeError("SPID:SECRET expected (an SP id of at most 6 characters)")
    return sp_id, secret


async def _serve_program(args: argparse.Namespace) -> None:
    ismg = Ismg(dict(args.account), host=args.listen[0], port=args.listen[1], auto_report=args.report, echo=True)

    async def deliver(request: web.Request) -> web.Response:
        body = await request.json()
        msg_ids = await ismg.deliver(str(body["from"]), str(body["to"]), str(body["text"]))
        return web.json_response({"msg_ids": [format_msg_id(msg_id) for msg_id in msg_ids]})

    async def messages(_: web.Request) -> web.Response:
        found = [
            {"dest": m.dest, "source": m.source, "text": m.text, "msg_ids": list(m.msg_ids)} for m in ismg.messages
        ]
        return web.json_response(found)

    async def throttle(request: web.Request) -> web.Response:
        ismg.throttle(int((await request.json())["count"]))
        return web.json_response({})

    async def drop(_: web.Request) -> web.Response:
        ismg.drop()
        return web.json_response({})

    routes = [
        web.post("/deliver", deliver),
        web.get("/messages", messages),
        web.post("/throttle", throttle),
        web.post("/drop", drop),
    ]
    await serve_program(ismg, routes, args.control, "ismg (CMPP 3.0)")


PROGRAM = ProgramSpec(
    name="ismg",
    description="A CMPP 3.0 ISMG for tests and demos.",
    wire="CMPP",
    clients="SPs",
    port=7890,
    account=_account,
    account_help="SPID:SECRET (repeatable)",
    receipts="--report",
    to_help="the SP's number (106353112345)",
)


def main(argv: Sequence[str] | None = None) -> int:
    return program_main(PROGRAM, argv, _serve_program)


if __name__ == "__main__":
    sys.exit(main())
