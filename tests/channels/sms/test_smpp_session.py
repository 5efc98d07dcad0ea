"""The SMPP session: its pure decisions, then `SmppLink` bound over real TCP to the faithful SMSC
(peers/smsc.py). Every wait is on an event, bounded; nothing sleeps to synchronise."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest

from gateway.channels.sms import smpp
from gateway.channels.sms.link import InboundSms, OutboundSms, SmsRejected
from gateway.channels.sms.session import Pacer, backoff
from gateway.channels.sms.smpp import DeliverSm, Status, Tag, Tlv
from gateway.channels.sms.smpp_session import (
    Answer,
    InPart,
    SmppLink,
    SmppSettings,
    inbound_part,
    merged,
    message_of,
)
from gateway.channels.sms.text import Complete, Incomplete, PartKey, Receipt
from gateway.shell.embedded_redis import free_port
from peers.smsc import Smsc
from tests.channels.sms.support import failing_once, running, wait_state

CITIZEN = "13800138000"
HOTLINE = "12345"
PASSWORD = "s3cret"
LONG_CHINESE = "幸福路十二号的路灯已经坏了三天，晚上非常黑，老人和孩子走路很不安全，请尽快派人来修理。" * 4  # 3 parts

# --- pure decisions -----------------------------------------------------------------------------


def deliver_sm(short_message: bytes = b"", **fields: Any) -> DeliverSm:
    return DeliverSm(sequence=1, source_addr=CITIZEN, destination_addr=HOTLINE, short_message=short_message, **fields)


ANSWER = Answer(connection=None, sequence=1)  # type: ignore[arg-type]  # never sent in the pure tests


def test_a_part_is_found_by_its_16_bit_udh_after_another_element() -> None:
    udh = b"\x0c\x05\x04\x0b\x84\x23\xf0\x08\x04\x12\x34\x03\x02"  # ports, then a 16-bit concatenation
    pdu = deliver_sm(udh + "你".encode("utf-16-be"), esm_class=0x40, data_coding=8)
    key, seq, part = inbound_part(pdu, ANSWER)
    assert (key, seq) == (PartKey(CITIZEN, HOTLINE, 0x1234, 3), 2)
    assert (part.data_coding, part.body) == (8, "你".encode("utf-16-be"))


def test_a_part_is_found_by_its_sar_tlvs_and_a_message_payload_is_read() -> None:
    pdu = deliver_sm(tlvs=(*smpp.sar_tlvs(0x0102, 2, 1), Tlv(Tag.MESSAGE_PAYLOAD, b"hello")))
    key, seq, part = inbound_part(pdu, ANSWER)
    assert (key, seq, part.body) == (PartKey(CITIZEN, HOTLINE, 0x0102, 2), 1, b"hello")


@pytest.mark.parametrize(
    ("pdu", "message"),
    [
        (deliver_sm(b"\x01\x02", data_coding=4), "data_coding 4 is not text"),
        (deliver_sm(b"\x09\x00\x03", esm_class=0x40), "UDH says 9 bytes"),
        (deliver_sm(b"x", tlvs=(Tlv(Tag.SAR_MSG_REF_NUM, b"\x00\x01"),)), "come together"),
        (deliver_sm(b"x", tlvs=smpp.sar_tlvs(1, 2, 3)), "segment 3 of 2"),
    ],
)
def test_what_is_not_a_readable_part_is_refused(pdu: DeliverSm, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        inbound_part(pdu, ANSWER)


def in_part(body: bytes, fingerprint: str, coding: int = 8) -> InPart:
    return InPart(coding, body, fingerprint, (ANSWER,))


def test_a_message_is_joined_before_decoding_and_named_by_its_parts() -> None:
    emoji = "😀".encode("utf-16-be")  # a sender that cut the pair between two parts
    key = PartKey(CITIZEN, HOTLINE, 7, 2)
    whole = message_of(Complete(key, (in_part(b"\x4f\x60" + emoji[:2], "a"), in_part(emoji[2:], "b"))))
    assert (whole.text, whole.complete, whole.missing) == ("你😀", True, ())
    assert whole.message_id == message_of(Complete(key, (in_part(b"", "a"), in_part(b"", "b")))).message_id
    assert whole.message_id != message_of(Complete(key, (in_part(b"", "a"), in_part(b"", "c")))).message_id
    single = message_of(Complete(PartKey(CITIZEN, HOTLINE, 0, 1), (in_part(b"\x4f\x60", "f1"),)))
    assert (single.message_id, single.text) == ("f1", "你")


def test_an_incomplete_message_says_what_is_missing() -> None:
    key = PartKey(CITIZEN, HOTLINE, 7, 3)
    partial = message_of(Incomplete(key, (in_part(b"\x4f\x60", "a"), in_part(b"\x59\x7d", "c")), (1, 3), (2,)))
    assert (partial.text, partial.complete, partial.missing) == ("你好", False, (2,))


def test_a_redelivered_part_keeps_every_answer_bounded() -> None:
    held = in_part(b"old", "x")
    for sequence in range(2, 10):
        held = merged(held, InPart(8, b"new", "x", (Answer(None, sequence),)))  # type: ignore[arg-type]
    assert held.body == b"new"
    assert [answer.sequence for answer in held.answers] == [6, 7, 8, 9]


def test_backoff_doubles_to_its_ceiling_and_jitters_below_it() -> None:
    assert [backoff(attempt, 1, 10) for attempt in range(1, 6)] == [1, 2, 4, 8, 10]
    assert backoff(9, 1, 10, jitter=0.5, rand=lambda: 0.999) == pytest.approx(5.005)
    assert backoff(9, 1, 10, jitter=0.5, rand=lambda: 0.0) == 10


def test_the_pacer_spaces_sends_and_holds_them_back_when_throttled() -> None:
    pacer = Pacer(rate=10)
    assert [pacer.reserve(100.0) for _ in range(3)] == pytest.approx([0.0, 0.1, 0.2])
    pacer.hold(105.0)
    assert pacer.reserve(100.0) == pytest.approx(5.0)


def test_settings_out_of_range_are_named_and_the_password_is_never_shown() -> None:
    with pytest.raises(ValueError, match="password, window"):
        SmppSettings("h", 1, "hotline", "123456789", HOTLINE, window=0)
    assert PASSWORD not in repr(SmppSettings("h", 1, "hotline", PASSWORD, HOTLINE))


# --- over real TCP, against the SMSC -----------------------------------------------------------


@dataclass
class Received:
    """What the link handed over, with an event per arrival."""

    messages: list[InboundSms] = field(default_factory=list)
    receipts: list[Receipt] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    before_message: Callable[[InboundSms], Awaitable[None]] | None = None

    async def on_message(self, message: InboundSms) -> None:
        if self.before_message is not None:
            await self.before_message(message)
        self.messages.append(message)
        self.arrived.set()

    async def on_receipt(self, receipt: Receipt) -> None:
        self.receipts.append(receipt)
        self.arrived.set()

    async def until(self, count: int, kind: str = "messages", timeout: float = 10.0) -> None:
        async with asyncio.timeout(timeout):
            while len(getattr(self, kind)) < count:
                self.arrived.clear()
                await self.arrived.wait()


def settings(smsc_port: int, **overrides: Any) -> SmppSettings:
    values: dict[str, Any] = {
        "enquire_interval": 30.0,
        "response_timeout": 5.0,
        "reconnect_min": 0.01,
        "reconnect_max": 0.05,
        "throttle_min": 0.01,
        "throttle_max": 0.05,
        "submit_wait": 10.0,
        "stop_timeout": 2.0,
    }
    values.update(overrides)
    return SmppSettings("127.0.0.1", smsc_port, "hotline", PASSWORD, HOTLINE, **values)


@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    async with Smsc({"hotline": PASSWORD}, redeliver_delay=0.01) as peer:
        yield peer


@pytest.fixture
def received() -> Received:
    return Received()


@asynccontextmanager
async def link_to(smsc: Smsc, received: Received, **overrides: Any) -> AsyncIterator[SmppLink]:
    link = SmppLink(settings(smsc.port, **overrides), received.on_message, received.on_receipt)
    async with running(link, bound=True) as bound:
        yield bound


async def test_binds_as_a_transceiver(smsc: Smsc, received: Received) -> None:
    async with link_to(smsc, received) as link:
        assert [(bind.system_id, bind.command, bind.status) for bind in smsc.binds] == [
            ("hotline", "bind_transceiver", 0)
        ]
        health = link.health()
        assert (health.state, health.last_error, health.counters.binds) == ("bound", None, 1)


@pytest.mark.parametrize(
    ("system_id", "password", "status"),
    [("hotline", "wrong", "ESME_RINVPASWD (wrong password)"), ("nobody", PASSWORD, "ESME_RINVSYSID (unknown")],
)
async def test_refused_credentials_mean_auth_failed_and_one_clear_line(
    smsc: Smsc, caplog: pytest.LogCaptureFixture, system_id: str, password: str, status: str
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.channels.sms.smpp")
    options = SmppSettings("127.0.0.1", smsc.port, system_id, password, HOTLINE, reconnect_max=3600.0)
    link = SmppLink(options, Received().on_message, Received().on_receipt)
    async with running(link, bound=False):
        health = await wait_state(link, "auth_failed")
        assert health.last_error is not None and status in health.last_error
        errors = [record.getMessage() for record in caplog.records if record.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert f"the SMSC refused the bind as {system_id!r}: {status}" in errors[0]
        assert "retrying every 3600 s" in errors[0]
        assert PASSWORD not in caplog.text
        assert len(smsc.binds) == 1  # the next try waits for the ceiling


async def test_a_three_part_chinese_sms_out_of_order_is_one_message(smsc: Smsc, received: Received) -> None:
    async with link_to(smsc, received):
        names = await smsc.deliver(CITIZEN, HOTLINE, LONG_CHINESE, order=[3, 1, 2])
        assert len(names) == 3
        await received.until(1)
        [message] = received.messages
        assert (message.text, message.source, message.dest, message.complete) == (LONG_CHINESE, CITIZEN, HOTLINE, True)
        for name in names:
            assert await smsc.results_of(name) == [Status.ESME_ROK]


@pytest.mark.parametrize(
    ("concat", "extra_udh"),
    [("udh16", b""), ("udh8", b"\x05\x04\x0b\x84\x23\xf0"), ("udh16", b"\x24\x01\x00"), ("sar", b"")],
)
async def test_long_messages_joined_by_16_bit_udh_other_elements_or_sar(
    smsc: Smsc, received: Received, concat: Any, extra_udh: bytes
) -> None:
    async with link_to(smsc, received):
        await smsc.deliver(CITIZEN, HOTLINE, LONG_CHINESE, order=[2, 3, 1], concat=concat, extra_udh=extra_udh)
        await received.until(1)
        assert [message.text for message in received.messages] == [LONG_CHINESE]


async def test_gsm_text_with_escapes_arrives_as_written(smsc: Smsc, received: Received) -> None:
    text = "Lamp {12} broken ~ 3 days, costs €0 [sic] " * 5  # GSM, 2 parts
    async with link_to(smsc, received):
        await smsc.deliver(CITIZEN, HOTLINE, text, order=[2, 1])
        await received.until(1)
        assert received.messages[0].text == text


async def test_deliver_sm_resp_waits_for_the_callback_to_return(smsc: Smsc, received: Received) -> None:
    entered, release = asyncio.Event(), asyncio.Event()

    async def hold(_: InboundSms) -> None:
        entered.set()
        await release.wait()

    received.before_message = hold
    async with link_to(smsc, received):
        [name] = await smsc.deliver(CITIZEN, HOTLINE, "路灯坏了")
        async with asyncio.timeout(10):
            await entered.wait()
        await smsc.enquire_link()  # a round trip: a response written before its answer has arrived
        assert name not in smsc.deliver_results
        release.set()
        assert await smsc.results_of(name) == [Status.ESME_ROK]


async def test_a_failing_callback_makes_the_smsc_redeliver_under_the_same_id(
    smsc: Smsc, received: Received, caplog: pytest.LogCaptureFixture
) -> None:
    seen, received.before_message = failing_once(RuntimeError("the store is down"))
    async with link_to(smsc, received) as link:
        names = await smsc.deliver(CITIZEN, HOTLINE, LONG_CHINESE, order=[2, 1, 3])
        await received.until(1)
        for name in names:
            assert await smsc.results_of(name, count=2) == [Status.ESME_RX_T_APPN, Status.ESME_ROK]
        assert [message.text for message in received.messages] == [LONG_CHINESE]
        assert len(seen) == 2 and seen[0].message_id == seen[1].message_id
        assert link.health().counters.callback_errors == 1
    assert sum("the store is down" in record.getMessage() for record in caplog.records) == 1


async def test_a_long_reply_goes_out_in_67_character_ucs2_parts_asking_for_receipts(
    smsc: Smsc, received: Received
) -> None:
    async with link_to(smsc, received) as link:
        submitted = await link.submit(OutboundSms(CITIZEN, LONG_CHINESE, reference="r1"))
        [message] = await smsc.messages_to(CITIZEN)
        assert message.text == LONG_CHINESE and message.source == HOTLINE
        assert submitted.message_ids == message.message_ids and len(message.parts) == 3
        for part in message.parts:
            udh, body = smpp_udh(part.short_message)
            assert part.esm_class & 0x40 and udh[:3] == b"\x05\x00\x03"
            assert part.data_coding == 8 and len(body) <= 134
            assert part.registered_delivery == 1
        assert [len(body) // 2 for _, body in map(smpp_udh, (part.short_message for part in message.parts))][:2] == [
            67,
            67,
        ]
        assert link.health().counters.parts_out == 3


def smpp_udh(short_message: bytes) -> tuple[bytes, bytes]:
    return short_message[: short_message[0] + 1], short_message[short_message[0] + 1 :]


@pytest.mark.parametrize(("seconds", "tlvs"), [(False, True), (True, False)])
async def test_a_receipt_reaches_on_receipt_with_the_parts_message_id(seconds: bool, tlvs: bool) -> None:
    received = Received()
    moment = datetime(2024, 5, 6, 7, 8, 9)
    async with (
        Smsc({"hotline": PASSWORD}, receipt_seconds=seconds, now=lambda: moment) as smsc,
        link_to(smsc, received) as link,
    ):
        submitted = await link.submit(OutboundSms(CITIZEN, "您反映的问题已处理", reference="r2"))
        [message_id] = submitted.message_ids
        smsc.receipt(message_id, "UNDELIV", tlvs=tlvs)
        await received.until(1, "receipts")
        [receipt] = received.receipts
        assert (receipt.message_id, receipt.state) == (message_id, "failed")
        assert receipt.done_at == (moment if seconds else moment.replace(second=0))
        assert link.health().counters.receipts_in == 1


async def test_automatic_receipts_for_each_part(received: Received) -> None:
    async with Smsc({"hotline": PASSWORD}, auto_receipt="DELIVRD") as smsc, link_to(smsc, received) as link:
        submitted = await link.submit(OutboundSms(CITIZEN, LONG_CHINESE, reference="r3"))
        await received.until(3, "receipts")
        assert sorted(receipt.message_id for receipt in received.receipts) == sorted(submitted.message_ids)
        assert {receipt.state for receipt in received.receipts} == {"delivered"}


async def test_throttling_is_honoured_and_the_submit_succeeds_after_back_off(smsc: Smsc, received: Received) -> None:
    async with link_to(smsc, received) as link:
        smsc.throttle(2)
        submitted = await link.submit(OutboundSms(CITIZEN, "收到", reference="r4"))
        [message] = await smsc.messages_to(CITIZEN)
        assert message.message_ids == submitted.message_ids
        assert len(smsc.received(smpp.SubmitSm)) == 3
        assert link.health().counters.throttled == 2


async def test_throttled_past_the_retries_is_a_transient_refusal(smsc: Smsc, received: Received) -> None:
    async with link_to(smsc, received, throttle_retries=1) as link:
        smsc.throttle(5)
        with pytest.raises(SmsRejected, match="throttled 2 times") as raised:
            await link.submit(OutboundSms(CITIZEN, "收到", reference="r5"))
        assert raised.value.transient


async def test_a_permanent_refusal_is_said(smsc: Smsc, received: Received) -> None:
    async with link_to(smsc, received) as link:
        smsc.fail_submits(Status.ESME_RINVDSTADR, 1)
        with pytest.raises(SmsRejected, match="ESME_RINVDSTADR") as raised:
            await link.submit(OutboundSms(CITIZEN, "收到", reference="r6"))
        assert not raised.value.transient
        assert link.health().counters.rejected == 1


async def test_a_dropped_connection_is_reconnected_and_the_pending_submit_completes_once(
    smsc: Smsc, received: Received
) -> None:
    async with link_to(smsc, received) as link:
        smsc.drop_on_submit()
        submitted = await link.submit(OutboundSms(CITIZEN, "已转交相关部门", reference="r7"))
        [message] = await smsc.messages_to(CITIZEN)
        assert message.message_ids == submitted.message_ids
        assert len(smsc.messages) == 1 and len(smsc.received(smpp.SubmitSm)) == 2  # one lost with the connection
        assert [bind.status for bind in smsc.binds] == [0, 0]
        assert link.health().counters.binds == 2


async def test_a_submit_without_response_ends_the_connection_and_is_sent_again(smsc: Smsc, received: Received) -> None:
    async with link_to(smsc, received, response_timeout=0.3) as link:
        smsc.swallow(1)
        submitted = await link.submit(OutboundSms(CITIZEN, "已转交", reference="r8"))
        assert (await smsc.messages_to(CITIZEN))[0].message_ids == submitted.message_ids
        assert link.health().counters.binds == 2


async def test_a_connection_dropped_while_idle_comes_back(smsc: Smsc, received: Received) -> None:
    async with link_to(smsc, received) as link:
        smsc.drop()
        await smsc.until(lambda: len(smsc.binds) == 2 or None)
        await wait_state(link, "bound")
        await link.submit(OutboundSms(CITIZEN, "在吗", reference="r9"))
        assert len(await smsc.messages_to(CITIZEN)) == 1


async def test_deliveries_owed_while_disconnected_arrive_after_the_rebind(smsc: Smsc, received: Received) -> None:
    async with link_to(smsc, received):
        smsc.drop_on_submit()
        smsc.drop()
        await smsc.deliver(CITIZEN, HOTLINE, "断线时发的短信")
        await received.until(1)
        assert received.messages[0].text == "断线时发的短信"


async def test_submit_waits_for_a_bind_then_gives_up_transiently() -> None:
    link = SmppLink(settings(free_port(), submit_wait=0.2), Received().on_message, Received().on_receipt)
    async with running(link, bound=False):
        with pytest.raises(SmsRejected, match=r"no SMPP bind within 0\.2 s") as raised:
            await link.submit(OutboundSms(CITIZEN, "x", reference="r10"))
        assert raised.value.transient
        assert link.health().state in ("connecting", "down")


@pytest.mark.parametrize(
    ("kind", "status"),
    [
        ("unknown_command", Status.ESME_RINVCMDID),
        ("bad_length", Status.ESME_RINVCMDLEN),
        ("truncated", Status.ESME_RINVCMDLEN),
        ("no_nul", Status.ESME_RINVCMDLEN),
        ("overlong", Status.ESME_RINVSRCADR),
    ],
)
async def test_a_malformed_pdu_gets_a_generic_nack_and_the_session_lives(
    smsc: Smsc, received: Received, kind: Any, status: Status
) -> None:
    async with link_to(smsc, received) as link:
        nack = await smsc.send_malformed(kind)
        assert nack.status == status
        await smsc.deliver(CITIZEN, HOTLINE, "还在吗")
        await received.until(1)
        assert (link.health().state, link.health().counters.binds) == ("bound", 1)
        assert link.health().counters.protocol_errors == 1


async def test_a_command_length_that_loses_the_framing_is_nacked_then_reconnected(
    smsc: Smsc, received: Received
) -> None:
    async with link_to(smsc, received) as link:
        nack = await smsc.send_malformed("fatal_length")
        assert nack.status == Status.ESME_RINVCMDLEN
        await smsc.until(lambda: len(smsc.binds) == 2 or None)
        await link.submit(OutboundSms(CITIZEN, "重连后", reference="r11"))
        assert len(await smsc.messages_to(CITIZEN)) == 1


async def test_enquire_link_both_ways(smsc: Smsc, received: Received) -> None:
    async with link_to(smsc, received, enquire_interval=0.05):
        await smsc.until(lambda: smsc.received(smpp.EnquireLink) or None)
        assert isinstance(await smsc.enquire_link(), smpp.EnquireLinkResp)


async def test_the_smscs_unbind_is_answered_and_the_link_binds_again(smsc: Smsc, received: Received) -> None:
    async with link_to(smsc, received):
        assert isinstance(await smsc.unbind(), smpp.UnbindResp)
        await smsc.until(lambda: len(smsc.binds) == 2 or None)


async def test_stop_unbinds(smsc: Smsc, received: Received) -> None:
    async with link_to(smsc, received) as link:
        pass
    assert smsc.unbinds == 1
    assert link.health().state == "down"


async def test_the_reassembly_timeout_hands_over_what_arrived(smsc: Smsc, received: Received) -> None:
    async with link_to(smsc, received, reassembly_timeout=0.2) as link:
        names = await smsc.deliver(CITIZEN, HOTLINE, LONG_CHINESE, order=[1, 3])
        await received.until(1)
        [message] = received.messages
        assert (message.complete, message.missing) == (False, (2,))
        assert LONG_CHINESE.startswith(message.text[:67]) and message.text.endswith(LONG_CHINESE[134:])
        assert await smsc.results_of(names[0]) == await smsc.results_of(names[2]) == [Status.ESME_ROK]
        assert link.health().counters.messages_in == 1


async def test_past_max_callbacks_a_delivery_is_deferred_to_the_smsc(smsc: Smsc, received: Received) -> None:
    release = asyncio.Event()

    async def hold(_: InboundSms) -> None:
        await release.wait()

    received.before_message = hold
    async with link_to(smsc, received, max_callbacks=1):
        [first] = await smsc.deliver(CITIZEN, HOTLINE, "第一条")
        [second] = await smsc.deliver("13900139000", HOTLINE, "第二条")
        assert (await smsc.results_of(second))[0] == Status.ESME_RX_T_APPN
        release.set()
        await received.until(2)
        assert sorted(message.text for message in received.messages) == ["第一条", "第二条"]
        assert await smsc.results_of(first) == [Status.ESME_ROK]
