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
  arrives, unanswered), a SUBMIT left unanswered (`swallow(n)`), malformed bytes (`send_raw`, with
  `malformed(kind)` to build them).

Every wait is awaitable and bounded (`until` and the views built on it); nothing here sleeps to
synchronise.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import logging
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
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
    Pdu,
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
from gateway.ticket import mask_phone
from peers.sms_peer import (
    LOOPBACK,
    MAX_RECORDED,
    PeerServer,
    add_send_command,
    address,
    run_program,
    send_program,
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


@dataclass(slots=True)
class _Outgoing:
    """A DELIVER this ISMG owes the SP until it is answered Result 0."""

    sp_id: str
    deliver: Deliver
    attempts: int = 0


@dataclass(slots=True)
class _Client:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    decoder: Decoder = field(default_factory=Decoder)
    sp_id: str | None = None  # set once logged in
    answered: dict[int, SubmitResp] = field(default_factory=dict)  # Sequence_Id -> answer (retransmissions)
    awaiting: dict[int, tuple[_Outgoing, asyncio.TimerHandle]] = field(default_factory=dict)
    requests: dict[int, asyncio.Future[Pdu]] = field(default_factory=dict)  # our ACTIVE_TESTs
    closed: bool = False


class Ismg(PeerServer[ReceivedMessage, int]):
    """The ISMG (see the module). `async with Ismg({"901234": "secret"}) as ismg:` listens on a free
    loopback port (`ismg.port`)."""

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
        super().__init__(host, port)
        self.accounts = dict(accounts)
        self.echo = echo
        self.auto_report = auto_report
        self.response_timeout = response_timeout
        self.redeliver_delay = redeliver_delay
        self.max_deliveries = max_deliveries
        self.window = window
        self._ismg_code = ismg_code
        self._now = now
        self._msg_sequence = itertools.count(1)
        self._sequence_ids = itertools.count(1)
        self._refs = itertools.count(1)
        self._clients: list[_Client] = []
        self._unsent: dict[str, deque[_Outgoing]] = {}  # per SP, in order
        self._reassembler: text.Reassembler[tuple[Submit, int]] = text.Reassembler(timeout=3600.0)
        self._failing = (Result.OK, 0)
        self.mute_active_test = False  # True: the SP's ACTIVE_TESTs go unanswered
        self._swallow = 0
        self._drop_on_submit = False
        # What it saw, for tests.
        self.logins: list[Login] = []
        self.frames: deque[Frame] = deque(maxlen=MAX_RECORDED)  # every frame an SP sent, in order
        self.submits: dict[int, Submit] = {}  # Msg_Id -> the part it named
        self.terminated = asyncio.Event()

    # --- awaiting what it saw (`until`, `messages_to`, `results_of` by Msg_Id: PeerServer) --------

    async def logged_in(self, count: int = 1, timeout: float = 10.0) -> list[Login]:
        """The first `count` login attempts (accepted or not), once they happened."""
        return await self.until(lambda: self.logins[:count] if len(self.logins) >= count else None, timeout)

    def bound(self) -> bool:
        return any(client.sp_id is not None and not client.closed for client in self._clients)

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
            self._queue(_Outgoing(sp_id or self._only_account(), delivers[number - 1]))
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
        self._queue(_Outgoing(submit.msg_src, deliver))
        return deliver.msg_id

    def throttle(self, count: int) -> None:
        """Answer the next `count` SUBMITs with Result 8 (flow control)."""
        self.fail_submits(Result.FLOW_CONTROL, count)

    def fail_submits(self, result: Result, count: int) -> None:
        """Answer the next `count` SUBMITs with this error Result (nothing recorded)."""
        self._failing = (result, count)

    def swallow(self, count: int) -> None:
        """Leave the next `count` SUBMITs unanswered (as if lost on the way)."""
        self._swallow = count

    def drop_on_submit(self) -> None:
        """Close the connection when the next SUBMIT arrives, without answering or recording it."""
        self._drop_on_submit = True

    def drop(self) -> None:
        """Close every connection now."""
        self._close_all()

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are to the logged-in SP."""
        client = self._client_of(self._only_account())
        if client is None:
            raise RuntimeError("no SP is logged in")
        client.writer.write(data)
        await client.writer.drain()

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
        client = self._client_of(self._only_account())
        if client is None:
            raise RuntimeError("no SP is logged in")
        sequence_id = next(self._sequence_ids)
        future: asyncio.Future[Pdu] = asyncio.get_running_loop().create_future()
        client.requests[sequence_id] = future
        client.writer.write(encode(Frame(sequence_id, ActiveTest())))
        async with asyncio.timeout(timeout):
            await future

    # --- serving a connection --------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = _Client(reader, writer)
        self._clients.append(client)
        try:
            with contextlib.suppress(OSError):  # the SP went away (a reset): the same as EOF
                while not client.closed:
                    data = await reader.read(64 * 1024)
                    if not data:
                        break
                    client.decoder.feed(data)
                    await self._drain(client)
        finally:
            self._close(client)
            self._clients.remove(client)
            await self.notify()

    async def _drain(self, client: _Client) -> None:
        while not client.closed:
            try:
                frame = client.decoder.next_frame()
            except CmppDecodeError as error:
                log.warning("ISMG: malformed PDU from the SP: %s", error)
                answer = error_response(error)
                if answer is not None:
                    client.writer.write(encode(answer))
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
        elif client.sp_id is None:
            log.warning("ISMG: %s before CMPP_CONNECT; closing", type(pdu).__name__)
            self._close(client)
        elif isinstance(pdu, Submit):
            self._on_submit(client, frame.sequence_id, pdu)
        elif isinstance(pdu, DeliverResp):
            self._on_deliver_resp(client, frame.sequence_id, pdu)
        elif isinstance(pdu, ActiveTest) and not self.mute_active_test:
            client.writer.write(encode(Frame(frame.sequence_id, ActiveTestResp())))
        elif isinstance(pdu, Terminate):
            self.terminated.set()
            client.writer.write(encode(Frame(frame.sequence_id, TerminateResp())))
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
            client.writer.write(encode(Frame(sequence_id, ConnectResp(status, bytes(16), VERSION))))
            log.info("ISMG: login of SP %s refused with Status %d", connect.source_addr, status)
            self._close(client)
            return
        answer = authenticator_ismg(status, connect.authenticator, secret)
        client.writer.write(encode(Frame(sequence_id, ConnectResp(status, answer, VERSION))))
        client.sp_id = connect.source_addr
        self._flush(connect.source_addr)

    def _on_submit(self, client: _Client, sequence_id: int, submit: Submit) -> None:
        if self._drop_on_submit:
            self._drop_on_submit = False
            self._close(client)
            return
        if self._swallow:
            self._swallow -= 1
            return
        if sequence_id in client.answered:  # a retransmission: the same answer, recorded once
            client.writer.write(encode(Frame(sequence_id, client.answered[sequence_id])))
            return
        result, count = self._failing
        if count:
            self._failing = (result, count - 1)
            client.writer.write(encode(Frame(sequence_id, SubmitResp(0, result))))
            return
        answer = SubmitResp(self._new_msg_id(), Result.OK)
        client.answered[sequence_id] = answer
        client.writer.write(encode(Frame(sequence_id, answer)))
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
                self.messages.append(_message(dest, done.parts))
                self._echo(self.messages[-1])

    def _on_deliver_resp(self, client: _Client, sequence_id: int, response: DeliverResp) -> None:
        entry = client.awaiting.pop(sequence_id, None)
        if entry is None:
            return
        outgoing, timer = entry
        timer.cancel()
        self.deliver_results.setdefault(outgoing.deliver.msg_id, []).append(response.result)
        if response.result != Result.OK:
            self._retry(outgoing)
        self._flush(outgoing.sp_id)

    # --- DELIVERs owed to the SP -----------------------------------------------------------

    def _queue(self, outgoing: _Outgoing) -> None:
        self._unsent.setdefault(outgoing.sp_id, deque()).append(outgoing)
        self._flush(outgoing.sp_id)

    def _flush(self, sp_id: str) -> None:
        """Send what is owed to the SP, in order, while its window has room."""
        client = self._client_of(sp_id)
        waiting = self._unsent.get(sp_id)
        while client is not None and waiting and len(client.awaiting) < self.window:
            self._send(client, waiting.popleft())

    def _send(self, client: _Client, outgoing: _Outgoing) -> None:
        outgoing.attempts += 1
        sequence_id = next(self._sequence_ids)
        timer = asyncio.get_running_loop().call_later(self.response_timeout, self._timed_out, client, sequence_id)
        client.awaiting[sequence_id] = (outgoing, timer)
        client.writer.write(encode(Frame(sequence_id, outgoing.deliver)))

    def _timed_out(self, client: _Client, sequence_id: int) -> None:
        entry = client.awaiting.pop(sequence_id, None)
        if entry is not None:
            self._retry(entry[0])
            self._flush(entry[0].sp_id)

    def _retry(self, outgoing: _Outgoing) -> None:
        if outgoing.attempts >= self.max_deliveries:
            log.warning(
                "ISMG: DELIVER %s given up after %d tries", format_msg_id(outgoing.deliver.msg_id), outgoing.attempts
            )
            return
        asyncio.get_running_loop().call_later(self.redeliver_delay, self._queue, outgoing)

    # --- helpers ---------------------------------------------------------------------------

    def _echo(self, message: ReceivedMessage) -> None:
        if self.echo:  # the program shows what the gateway sent; tests read `messages`
            print(f"SMS to {mask_phone(message.dest)} ({len(message.parts)} parts): {message.text}", flush=True)
        else:
            log.info("ISMG: SMS to %s, %d parts", mask_phone(message.dest), len(message.parts))

    def _close_all(self) -> None:
        for client in list(self._clients):
            self._close(client)

    def _client_of(self, sp_id: str) -> _Client | None:
        for client in reversed(self._clients):
            if client.sp_id == sp_id and not client.closed:
                return client
        return None

    def _only_account(self) -> str:
        if len(self.accounts) != 1:
            raise ValueError("name the SP: this ISMG has several accounts")
        return next(iter(self.accounts))

    def _close(self, client: _Client) -> None:
        if client.closed:
            return
        client.closed = True
        client.writer.close()
        for outgoing, timer in reversed(client.awaiting.values()):
            timer.cancel()  # owed still: sent again, first, after the next login
            self._unsent.setdefault(outgoing.sp_id, deque()).appendleft(outgoing)
        client.awaiting.clear()
        for future in client.requests.values():
            if not future.done():
                future.set_exception(ConnectionError("the SP's connection closed"))

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m peers.ismg", description="A CMPP 3.0 ISMG for tests and demos.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="listen for SPs (CMPP) and for commands (HTTP)")
    serve.add_argument("--listen", type=address, default=(LOOPBACK, 7890), help="CMPP address (127.0.0.1:7890)")
    serve.add_argument("--account", type=_account, action="append", required=True, help="SPID:SECRET (repeatable)")
    serve.add_argument("--control", type=address, default=(LOOPBACK, 7891), help="HTTP control (127.0.0.1:7891)")
    serve.add_argument("--report", choices=["DELIVRD", "UNDELIV"], default="DELIVRD", help="status reports sent")
    add_send_command(commands, control=(LOOPBACK, 7891), to_help="the SP's number (106353112345)")
    args = parser.parse_args(argv)
    return run_program(lambda: _serve_program(args) if args.command == "serve" else send_program(args))


if __name__ == "__main__":
    sys.exit(main())
