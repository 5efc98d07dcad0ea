"""The ISMG peer and the CMPP session together, over real TCP: what issue #13 asks of CMPP."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import aiohttp
import pytest

from gateway.channels.sms.cmpp import (
    Connect,
    ConnectResp,
    Decoder,
    Deliver,
    DeliverResp,
    Frame,
    MsgFmt,
    Result,
    Submit,
    authenticator_ismg,
    authenticator_source,
    encode,
    format_msg_id,
)
from gateway.channels.sms.cmpp_session import CmppLink
from gateway.channels.sms.link import InboundSms, OutboundSms
from gateway.channels.sms.text import parse_udh
from gateway.shell.embedded_redis import free_port
from peers.ismg import Ismg, Login
from tests.channels.sms.cmpp_support import (
    CITIZEN,
    HOTLINE,
    LONG_TEXT,
    SECRET,
    SP_ID,
    Inbox,
    linked,
    settings,
)
from tests.channels.sms.support import failing_once, read_next, running
from tests.logscan import assert_no_leaks

ROOT = Path(__file__).resolve().parents[3]
COMPLAINT = "幸福路12号路灯不亮已经三天了，晚上出行很不安全，请尽快派人修理。" * 5  # 3 UCS-2 parts


async def test_the_link_logs_in_and_is_bound() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, Inbox()) as link:
        assert ismg.logins == [Login(SP_ID, 0)]
        health = link.health()
        assert (health.state, health.last_error, health.counters.binds) == ("bound", None, 1)


async def test_a_wrong_secret_is_auth_failed_with_one_log_line(caplog: pytest.LogCaptureFixture) -> None:
    async with Ismg({SP_ID: SECRET}) as ismg:
        inbox = Inbox()
        link = CmppLink(settings(ismg.port, secret="not-the-secret"), inbox.on_message, inbox.on_receipt)
        async with running(link, bound=False):
            # A second attempt (at the back-off's ceiling) means the first refusal was taken in.
            assert await ismg.logged_in(2) == [Login(SP_ID, 3), Login(SP_ID, 3)]
            health = link.health()
            assert health.state == "auth_failed"
            assert health.last_error is not None and "Status 3" in health.last_error
    refusals = [r for r in caplog.records if r.name == "gateway.sms.cmpp" and r.levelno >= logging.ERROR]
    assert len(refusals) == 1
    assert "Status 3" in refusals[0].getMessage()
    assert "not-the-secret" not in caplog.text


async def test_an_unknown_sp_id_is_refused_with_status_2() -> None:
    async with Ismg({"999999": SECRET}) as ismg:
        inbox = Inbox()
        async with running(CmppLink(settings(ismg.port), inbox.on_message, inbox.on_receipt), bound=False) as link:
            assert (await ismg.logged_in(1))[0] == Login(SP_ID, 2)
            await ismg.logged_in(2)
            assert link.health().state == "auth_failed"


async def test_a_three_part_chinese_sms_out_of_order_is_one_message() -> None:
    inbox = Inbox()
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, inbox):
        msg_ids = await ismg.deliver(CITIZEN, HOTLINE, COMPLAINT, order=[3, 1, 2])
        assert len(msg_ids) == 3
        message = await inbox.message()
        whole = message.concatenation  # its key and its parts' digests (the ISMG chose the reference)
        assert message == InboundSms(format_msg_id(msg_ids[0]), CITIZEN, HOTLINE, COMPLAINT, True, (), whole)
        assert whole is not None and (whole.key.source, whole.key.dest, whole.key.total) == (CITIZEN, HOTLINE, 3)
        assert [number for number, _ in whole.parts] == [1, 2, 3]
        for msg_id in msg_ids:  # every part answered, once, Result 0
            assert await ismg.results_of(msg_id) == [Result.OK]
        assert inbox.messages.empty()


async def test_the_deliver_is_answered_only_after_the_callback_returned() -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold(_: InboundSms) -> None:
        entered.set()
        await release.wait()

    inbox = Inbox(before=hold)
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, inbox):
        [msg_id] = await ismg.deliver(CITIZEN, HOTLINE, "你好")
        await asyncio.wait_for(entered.wait(), 10)
        await ismg.active_test()  # whatever the session wrote before its ACTIVE_TEST_RESP has arrived
        assert msg_id not in ismg.deliver_results
        assert not any(isinstance(frame.pdu, DeliverResp) for frame in ismg.frames)
        release.set()
        assert await ismg.results_of(msg_id) == [Result.OK]
        assert (await inbox.message()).text == "你好"


async def test_a_callback_that_raises_gets_the_message_again_under_the_same_id(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen, fail_once = failing_once(ConnectionError("redis went away"))
    inbox = Inbox(before=fail_once)
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, inbox) as link:
        msg_ids = await ismg.deliver(CITIZEN, HOTLINE, COMPLAINT, order=[2, 3, 1])
        for msg_id in msg_ids:  # every part refused (transient), delivered again, then accepted
            assert await ismg.results_of(msg_id, 2) == [Result.FLOW_CONTROL, Result.OK]
        kept = await inbox.message()
        assert [message.message_id for message in seen] == [format_msg_id(msg_ids[0])] * 2
        assert kept.text == COMPLAINT
        assert link.health().counters.callback_errors == 1
    failures = [r for r in caplog.records if "handler of an inbound message failed" in r.getMessage()]
    assert len(failures) == 1


async def test_a_long_reply_goes_out_as_ucs2_parts_with_udhi_and_a_concatenation_udh() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, Inbox()) as link:
        submitted = await link.submit(OutboundSms(CITIZEN, LONG_TEXT, "reply-1"))
        [message] = await ismg.messages_to(CITIZEN)
        assert message.text == LONG_TEXT
        assert submitted.message_ids == message.msg_ids
        assert len(message.parts) == 3
        refs = set()
        for number, part in enumerate(message.parts, start=1):
            assert (part.msg_fmt, part.tp_udhi, part.pk_total, part.pk_number) == (MsgFmt.UCS2, 1, 3, number)
            assert (part.registered_delivery, part.msg_src, part.src_id, part.service_id) == (
                1,
                SP_ID,
                HOTLINE,
                "HOTLINE",
            )
            assert part.dest_terminal_ids == (CITIZEN,)
            udh, body = parse_udh(part.msg_content)
            assert udh is not None and (udh.total, udh.seq, udh.ref_bits) == (3, number, 8)
            assert len(body) <= 134  # 67 UTF-16 units
            refs.add(udh.ref)
        assert len(refs) == 1
        assert link.health().counters.parts_out == 3


async def test_a_status_report_reaches_on_receipt_with_the_submitted_msg_id() -> None:
    inbox = Inbox()
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, inbox) as link:
        submitted = await link.submit(OutboundSms(CITIZEN, "您的工单已办结", "reply-2"))
        report_id = ismg.report(int(submitted.message_ids[0], 16), "UNDELIV")
        receipt = await inbox.receipt()
        assert (receipt.message_id, receipt.state, receipt.error) == (submitted.message_ids[0], "failed", "UNDELIV")
        assert receipt.done_at is not None
        assert await ismg.results_of(report_id) == [Result.OK]
        assert link.health().counters.receipts_in == 1


async def test_automatic_delivered_reports_name_each_part() -> None:
    inbox = Inbox()
    async with Ismg({SP_ID: SECRET}, auto_report="DELIVRD") as ismg, linked(ismg, inbox) as link:
        submitted = await link.submit(OutboundSms(CITIZEN, LONG_TEXT, "reply-3"))
        receipts = [await inbox.receipt() for _ in submitted.message_ids]
        assert sorted(r.message_id for r in receipts) == sorted(submitted.message_ids)
        assert {r.state for r in receipts} == {"delivered"}


async def test_flow_control_backs_off_and_the_submit_then_succeeds() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, Inbox()) as link:
        ismg.throttle(2)
        submitted = await link.submit(OutboundSms(CITIZEN, "您好", "reply-4"))
        [message] = await ismg.messages_to(CITIZEN)
        assert submitted.message_ids == message.msg_ids
        assert sum(isinstance(frame.pdu, Submit) for frame in ismg.frames) == 3
        assert link.health().counters.throttled == 2


async def test_a_dropped_connection_reconnects_and_the_pending_submit_completes_once() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, Inbox()) as link:
        ismg.drop_on_submit()
        submitted = await link.submit(OutboundSms(CITIZEN, "您好，已受理", "reply-5"))
        [message] = await ismg.messages_to(CITIZEN)
        assert submitted.message_ids == message.msg_ids
        await ismg.active_test()
        assert [m.dest for m in ismg.messages] == [CITIZEN]  # once
        assert ismg.logins == [Login(SP_ID, 0), Login(SP_ID, 0)]
        assert link.health().counters.binds == 2


async def test_a_deliver_left_unanswered_by_a_dropped_connection_comes_again_after_the_login() -> None:
    entered, release = asyncio.Event(), asyncio.Event()
    seen: list[InboundSms] = []

    async def first_waits(message: InboundSms) -> None:
        seen.append(message)
        if len(seen) == 1:
            entered.set()
            await release.wait()  # the connection drops meanwhile: this answer cannot be sent

    inbox = Inbox(before=first_waits)
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, inbox):
        [msg_id] = await ismg.deliver(CITIZEN, HOTLINE, "停水了")
        await asyncio.wait_for(entered.wait(), 10)
        ismg.drop()
        await ismg.logged_in(2)
        release.set()
        assert await ismg.results_of(msg_id) == [Result.OK]  # the redelivery's answer, the only one
        assert [message.message_id for message in seen] == [format_msg_id(msg_id)] * 2
        assert (await inbox.message()).text == (await inbox.message()).text == "停水了"


async def test_malformed_pdus_are_answered_where_cmpp_allows_and_the_link_survives() -> None:
    inbox = Inbox()
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, inbox) as link:
        await ismg.send_raw(ismg.malformed("unknown_command", sequence_id=0x101))
        await ismg.send_raw(ismg.malformed("truncated_deliver", sequence_id=0x102))
        await ismg.active_test()
        answers = [frame for frame in ismg.frames if frame.sequence_id in (0x101, 0x102)]
        assert len(answers) == 1  # an unknown command has no response in CMPP
        assert isinstance(answers[0].pdu, DeliverResp) and answers[0].pdu.result == Result.BAD_LENGTH
        assert ismg.logins == [Login(SP_ID, 0)]  # the same connection

        await ismg.send_raw(ismg.malformed("bad_length"))  # framing lost: a new connection
        await ismg.logged_in(2)
        [msg_id] = await ismg.deliver(CITIZEN, HOTLINE, "还在吗")
        assert (await inbox.message()).message_id == format_msg_id(msg_id)
        assert link.health().counters.protocol_errors == 3


async def test_stop_sends_terminate() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg:
        async with linked(ismg, Inbox()) as link:
            assert not ismg.terminated.is_set()
        assert ismg.terminated.is_set()
        assert link.health().state == "down"


class RawSp:
    """An SP written by hand on a socket, to see the ISMG's own behaviour without our session."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer, self.decoder = reader, writer, Decoder()

    @classmethod
    async def connect(cls, port: int, secret: str = SECRET, version: int = 0x30) -> tuple[RawSp, ConnectResp, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        sp = cls(reader, writer)
        source = authenticator_source(SP_ID, secret, 1231235959)
        sp.send(Frame(1, Connect(SP_ID, source, version, 1231235959)))
        answer = await sp.frame()
        assert isinstance(answer.pdu, ConnectResp)
        return sp, answer.pdu, source

    def send(self, frame: Frame) -> None:
        self.writer.write(encode(frame))

    async def frame(self) -> Frame:
        return await read_next(self.reader, self.decoder.next_frame, self.decoder.feed, "ISMG")


async def test_the_ismg_authenticates_itself_and_refuses_a_version_above_3_0() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg:
        sp, answer, source = await RawSp.connect(ismg.port)
        assert (answer.status, answer.authenticator) == (0, authenticator_ismg(0, source, SECRET))
        sp.writer.close()
        sp, answer, _ = await RawSp.connect(ismg.port, version=0x31)
        assert (answer.status, answer.authenticator) == (4, bytes(16))
        with pytest.raises(ConnectionError):  # a refused login: the ISMG hangs up
            await sp.frame()


async def test_a_deliver_without_an_answer_comes_again_with_the_same_msg_id() -> None:
    async with Ismg({SP_ID: SECRET}, response_timeout=0.1) as ismg:
        sp, _, _ = await RawSp.connect(ismg.port)
        [msg_id] = await ismg.deliver(CITIZEN, HOTLINE, "你好")
        first, again = await sp.frame(), await sp.frame()  # the first one left unanswered
        assert isinstance(first.pdu, Deliver) and isinstance(again.pdu, Deliver)
        assert first.pdu == again.pdu and first.pdu.msg_id == msg_id
        assert first.sequence_id != again.sequence_id
        sp.send(Frame(again.sequence_id, DeliverResp(msg_id, Result.OK)))
        assert await ismg.results_of(msg_id) == [Result.OK]
        sp.writer.close()


@pytest.mark.slow
async def test_the_program_serves_and_send_injects_a_message(tmp_path: Path) -> None:
    cmpp_port, control_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    serve = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "peers.ismg", "serve",
        "--listen", f"127.0.0.1:{cmpp_port}", "--account", f"{SP_ID}:{SECRET}",
        "--control", f"127.0.0.1:{control_port}", "--report", "DELIVRD",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env,
    )  # fmt: skip
    try:
        assert serve.stdout is not None
        ready = await asyncio.wait_for(serve.stdout.readline(), 30)
        assert ready.decode().startswith(f"ismg (CMPP 3.0) ready at 127.0.0.1:{cmpp_port} ")
        inbox = Inbox()
        async with running(CmppLink(settings(cmpp_port), inbox.on_message, inbox.on_receipt), bound=False) as link:
            send = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "peers.ismg", "send", "--from", CITIZEN, "--to", HOTLINE, "--text", "你好",
                "--control", f"127.0.0.1:{control_port}",
                stdout=asyncio.subprocess.PIPE, env=env,
            )  # fmt: skip
            out, _ = await asyncio.wait_for(send.communicate(), 30)
            assert send.returncode == 0
            message = await inbox.message(30)
            assert (message.source, message.dest, message.text) == (CITIZEN, HOTLINE, "你好")
            assert message.message_id in out.decode()

            submitted = await link.submit(OutboundSms(CITIZEN, "收到", "reply-6"))
            assert (await inbox.receipt(30)).message_id == submitted.message_ids[0]
            async with aiohttp.ClientSession() as session:
                response = await session.get(f"http://127.0.0.1:{control_port}/messages")
                shown = await response.json()
            assert shown == [
                {"dest": CITIZEN, "source": HOTLINE, "text": "收到", "msg_ids": list(submitted.message_ids)}
            ]
            echoed = await asyncio.wait_for(serve.stdout.readline(), 30)
            assert "收到" in echoed.decode() and CITIZEN not in echoed.decode()
    finally:
        serve.terminate()
        _, err = await asyncio.wait_for(serve.communicate(), 30)
    assert_no_leaks(err.decode(), "python -m peers.ismg serve")
