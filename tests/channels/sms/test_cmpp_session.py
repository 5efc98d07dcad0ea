"""The CMPP session: its pure decisions without sockets, then its timers, window and callbacks
against the ISMG peer over real TCP."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from gateway.channels.sms.cmpp import ActiveTest, Deliver, Result, StatusReport, Submit
from gateway.channels.sms.cmpp_session import (
    Answer,
    CmppLink,
    InPart,
    inbound_part,
    merged,
    message_of,
    receipt_of,
    submits_for,
)
from gateway.channels.sms.link import InboundSms, OutboundSms, SmsRejected
from gateway.channels.sms.text import Complete, Incomplete, PartKey, Reassembler
from gateway.shell.embedded_redis import free_port
from peers.ismg import Ismg, Login
from tests.channels.sms.cmpp_support import CITIZEN, HOTLINE, LONG_TEXT, SECRET, SP_ID, Inbox, linked, settings
from tests.channels.sms.support import running

# --- pure decisions ----------------------------------------------------------------------------


def test_a_short_reply_is_one_ucs2_submit_asking_for_a_status_report() -> None:
    [submit] = submits_for(settings(1), OutboundSms(CITIZEN, "Hello 12345", "r"), ref=7)
    assert submit.msg_content == "Hello 12345".encode("utf-16-be")  # UCS-2 even when ASCII would do
    assert (submit.msg_fmt, submit.tp_udhi, submit.pk_total, submit.pk_number) == (8, 0, 1, 1)
    assert (submit.registered_delivery, submit.msg_src, submit.src_id, submit.service_id) == (
        1,
        SP_ID,
        HOTLINE,
        "HOTLINE",
    )
    assert submit.dest_terminal_ids == (CITIZEN,)


def test_a_long_reply_is_split_with_one_reference_and_pk_numbers() -> None:
    submits = submits_for(settings(1), OutboundSms(CITIZEN, LONG_TEXT, "r"), ref=200)
    assert [(s.pk_total, s.pk_number, s.tp_udhi) for s in submits] == [(3, 1, 1), (3, 2, 1), (3, 3, 1)]
    assert [s.msg_content[:6] for s in submits] == [bytes([5, 0, 3, 200, 3, n]) for n in (1, 2, 3)]


def test_a_reply_no_sms_can_carry_is_refused_for_good() -> None:
    with pytest.raises(ValueError, match="surrogate"):
        submits_for(settings(1), OutboundSms(CITIZEN, "\ud800", "r"), ref=1)


def deliver(content: bytes, *, udhi: int = 0, fmt: int = 8, msg_id: int = 1) -> Deliver:
    return Deliver(
        msg_id=msg_id, dest_id=HOTLINE, src_terminal_id=CITIZEN, msg_fmt=fmt, msg_content=content, tp_udhi=udhi
    )


ANSWER = Answer(connection=None, sequence_id=1, msg_id=1)  # type: ignore[arg-type]  # never sent here


def test_a_part_is_found_by_its_16_bit_reference_behind_another_udh_element() -> None:
    udh = bytes([9, 0x24, 1, 0x01, 0x08, 4, 0x12, 0x34, 3, 2])  # a language shift, then IEI 0x08
    key, seq, part = inbound_part(deliver(udh + "路灯".encode("utf-16-be"), udhi=1), ANSWER)
    assert (key, seq) == (PartKey(CITIZEN, HOTLINE, 0x1234, 3), 2)
    assert part.body == "路灯".encode("utf-16-be")


def test_a_message_without_udh_is_a_single_part() -> None:
    key, seq, _ = inbound_part(deliver("你好".encode("utf-16-be")), ANSWER)
    assert (key, seq) == (PartKey(CITIZEN, HOTLINE, 0, 1), 1)


@pytest.mark.parametrize(
    ("content", "udhi", "fmt", "problem"),
    [(b"\x00\x01", 0, 4, "not a text format"), (b"\x09\x00\x03", 1, 8, "UDH says 9 bytes")],
)
def test_a_deliver_that_is_not_text_is_refused(content: bytes, udhi: int, fmt: int, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        inbound_part(deliver(content, udhi=udhi, fmt=fmt), ANSWER)


def test_the_parts_are_joined_before_decoding_so_a_gbk_character_cut_in_two_survives() -> None:
    raw = "市民来电反映".encode("gbk")
    halves = (raw[:5], raw[5:])  # 5 bytes: the third character's first byte ends part 1
    reassembler: Reassembler[InPart] = Reassembler()
    key = PartKey(CITIZEN, HOTLINE, 9, 2)
    assert reassembler.add(key, 2, InPart(22, 15, halves[1], ()), 0.0) is None
    done = reassembler.add(key, 1, InPart(11, 15, halves[0], ()), 0.0)
    assert isinstance(done, Complete)
    assert message_of(done) == InboundSms("000000000000000b", CITIZEN, HOTLINE, "市民来电反映", True, ())


def test_what_the_timeout_delivers_is_marked_incomplete_and_named_by_its_first_part() -> None:
    key = PartKey(CITIZEN, HOTLINE, 9, 3)
    parts = (InPart(31, 8, "第一".encode("utf-16-be"), ()), InPart(33, 8, "第三".encode("utf-16-be"), ()))
    message = message_of(Incomplete(key, parts, (1, 3), (2,)))
    assert (message.text, message.complete, message.missing) == ("第一第三", False, (2,))
    assert message.message_id == "000000000000001f"


def test_a_redelivered_part_keeps_every_deliver_to_answer_bounded() -> None:
    first = InPart(1, 8, b"a", (Answer(None, 1, 1),))  # type: ignore[arg-type]
    again = merged(first, InPart(1, 8, b"b", (Answer(None, 2, 1),)))  # type: ignore[arg-type]
    assert again.body == b"b"
    assert [a.sequence_id for a in again.answers] == [1, 2]
    for sequence_id in range(3, 10):
        again = merged(again, InPart(1, 8, b"c", (Answer(None, sequence_id, 1),)))  # type: ignore[arg-type]
    assert [a.sequence_id for a in again.answers] == [6, 7, 8, 9]


def test_a_status_report_becomes_a_receipt_on_the_submitted_msg_id() -> None:
    receipt = receipt_of(StatusReport(0xC1BAA70030390001, "EXPIRED", "2401021504", "2401021530", CITIZEN, 5))
    assert receipt.message_id == "c1baa70030390001"
    assert (receipt.state, receipt.error, receipt.done_at) == ("expired", "EXPIRED", datetime(2024, 1, 2, 15, 30))
    assert receipt_of(StatusReport(1, "MK:0001", "", "", CITIZEN, 5)).state == "unknown"


def test_settings_out_of_range_are_named() -> None:
    with pytest.raises(ValueError, match="sp_id, window, tries"):
        settings(1, sp_id="1234567", window=0, tries=0)


def test_the_secret_is_not_in_the_settings_repr() -> None:
    assert SECRET not in repr(settings(1))


# --- timers, window and callbacks over TCP -----------------------------------------------------


async def test_a_submit_left_unanswered_is_sent_again_with_the_same_sequence_id() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, Inbox(), response_timeout=0.2) as link:
        ismg.swallow(1)
        submitted = await link.submit(OutboundSms(CITIZEN, "您好", "r1"))
        sent = [frame.sequence_id for frame in ismg.frames if isinstance(frame.pdu, Submit)]
        assert len(sent) == 2 and sent[0] == sent[1]
        [message] = await ismg.messages_to(CITIZEN)
        assert message.msg_ids == submitted.message_ids


async def test_a_submit_never_answered_fails_transiently_after_every_try() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, Inbox(), response_timeout=0.1, tries=3) as link:
        ismg.swallow(3)
        with pytest.raises(SmsRejected, match="after 3 tries") as caught:
            await link.submit(OutboundSms(CITIZEN, "您好", "r2"))
        assert caught.value.transient
        assert sum(isinstance(frame.pdu, Submit) for frame in ismg.frames) == 3


async def test_a_refused_submit_is_a_permanent_rejection() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, Inbox()) as link:
        ismg.fail_submits(Result.BAD_DEST_TERMINAL, 1)
        with pytest.raises(SmsRejected, match="Result 13") as caught:
            await link.submit(OutboundSms(CITIZEN, "您好", "r3"))
        assert not caught.value.transient
        assert link.health().counters.rejected == 1


async def test_flow_control_past_the_retries_fails_transiently() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, Inbox(), throttle_retries=2) as link:
        ismg.throttle(5)
        with pytest.raises(SmsRejected, match="flow control 3 times") as caught:
            await link.submit(OutboundSms(CITIZEN, "您好", "r4"))
        assert caught.value.transient


async def test_a_submit_with_no_login_in_time_fails_transiently() -> None:
    inbox = Inbox()
    link = CmppLink(settings(free_port(), submit_wait=0.2), inbox.on_message, inbox.on_receipt)  # nobody listens
    async with running(link, bound=False):
        with pytest.raises(SmsRejected, match=r"no CMPP login within 0\.2 s") as caught:
            await link.submit(OutboundSms(CITIZEN, "您好", "r5"))
        assert caught.value.transient
        assert link.health().state in ("connecting", "down")


async def test_the_window_bounds_the_submits_awaiting_a_response() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, Inbox(), window=2, response_timeout=30.0) as link:
        ismg.swallow(2)  # neither answered: the window is full
        submits = [asyncio.create_task(link.submit(OutboundSms(CITIZEN, f"第{n}条", f"r{n}"))) for n in range(3)]
        await ismg.until(lambda: True if sum(isinstance(f.pdu, Submit) for f in ismg.frames) >= 2 else None)
        await ismg.active_test()  # anything sent before its answer has arrived
        assert sum(isinstance(frame.pdu, Submit) for frame in ismg.frames) == 2
        ismg.drop()  # the two are sent again on the next connection, then the third
        await asyncio.wait_for(asyncio.gather(*submits), 10)
        assert sorted(m.text for m in await ismg.messages_to(CITIZEN, 3)) == ["第0条", "第1条", "第2条"]


async def test_an_idle_link_sends_active_tests() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, Inbox(), active_test_interval=0.05):
        await ismg.until(lambda: True if any(isinstance(f.pdu, ActiveTest) for f in ismg.frames) else None)


async def test_active_tests_that_go_unanswered_end_the_connection_and_it_is_made_again() -> None:
    async with Ismg({SP_ID: SECRET}) as ismg:
        ismg.mute_active_test = True
        async with linked(ismg, Inbox(), active_test_interval=0.05, response_timeout=0.05, tries=2) as link:
            assert await ismg.logged_in(2) == [Login(SP_ID, 0)] * 2
            assert sum(isinstance(f.pdu, ActiveTest) for f in ismg.frames) >= 2
            assert link.health().counters.binds >= 1


async def test_the_reassembly_timeout_hands_over_what_arrived_and_answers_it() -> None:
    inbox = Inbox()
    long_text = "第一部分" * 20 + "第二部分" * 20 + "第三部分" * 10
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, inbox, reassembly_timeout=0.2):
        msg_ids = await ismg.deliver(CITIZEN, HOTLINE, long_text, order=[3, 1])
        message = await inbox.message()
        assert (message.complete, message.missing, message.message_id) == (False, (2,), f"{msg_ids[0]:016x}")
        assert message.text == long_text[:67] + long_text[134:]
        assert await ismg.results_of(msg_ids[0]) == await ismg.results_of(msg_ids[2]) == [Result.OK]


async def test_one_sources_messages_are_handed_over_in_order() -> None:
    first_in, release = asyncio.Event(), asyncio.Event()
    order: list[str] = []

    async def slow_first(message: InboundSms) -> None:
        order.append(message.text)
        if message.text == "一":
            first_in.set()
            await release.wait()

    inbox = Inbox(before=slow_first)
    async with Ismg({SP_ID: SECRET}) as ismg, linked(ismg, inbox):
        await ismg.deliver(CITIZEN, HOTLINE, "一")
        await ismg.deliver(CITIZEN, HOTLINE, "二")
        await asyncio.wait_for(first_in.wait(), 10)
        await ismg.active_test()  # both DELIVERs have been read
        assert order == ["一"]
        release.set()
        assert [(await inbox.message()).text for _ in range(2)] == ["一", "二"]


async def test_past_max_callbacks_a_deliver_is_answered_flow_control_and_comes_again() -> None:
    first_in, release = asyncio.Event(), asyncio.Event()

    async def slow_first(message: InboundSms) -> None:
        if message.text == "一":
            first_in.set()
            await release.wait()

    inbox = Inbox(before=slow_first)
    async with (
        Ismg({SP_ID: SECRET}, redeliver_delay=0.05, max_deliveries=1000) as ismg,
        linked(ismg, inbox, max_callbacks=1),
    ):
        await ismg.deliver(CITIZEN, HOTLINE, "一")
        await asyncio.wait_for(first_in.wait(), 10)
        [second] = await ismg.deliver("13900139000", HOTLINE, "二")
        assert await ismg.results_of(second) == [Result.FLOW_CONTROL]
        release.set()
        texts = {(await inbox.message()).text for _ in range(2)}
        assert texts == {"一", "二"}
        results = ismg.deliver_results[second]
        assert await ismg.until(lambda: results if Result.OK in results else None)
