"""The faithful SMSC itself (peers/smsc.py): driven by a bare ESME written with the codec, so what
it does on the wire is checked without the gateway's session; then the program, with the session."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest

from gateway.channels.sms import smpp
from gateway.channels.sms.link import InboundSms, OutboundSms
from gateway.channels.sms.smpp import (
    BindReceiver,
    BindTransceiver,
    BindTransmitter,
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
)
from gateway.channels.sms.smpp_session import SmppLink, SmppSettings
from gateway.channels.sms.text import Receipt, encode, parse_receipt
from gateway.shell.embedded_redis import free_port
from peers.smsc import Smsc, malformed
from tests.channels.sms.support import read_next, wait_state
from tests.logscan import assert_no_leaks

ROOT = Path(__file__).resolve().parents[3]
CITIZEN = "13800138000"
HOTLINE = "12345"
PASSWORD = "s3cret"


class BareEsme:
    """An ESME with no session logic: writes the PDUs it is given, reads what comes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.decoder = smpp.Decoder()

    def send(self, pdu: Pdu) -> None:
        self.writer.write(smpp.encode(pdu))

    async def next_pdu(self, timeout: float = 10.0) -> Pdu:
        return await read_next(self.reader, self.decoder.next_pdu, self.decoder.feed, "SMSC", timeout)

    async def closed(self, timeout: float = 10.0) -> bool:
        async with asyncio.timeout(timeout):
            return await self.reader.read(1) == b""

    async def bind(self, system_id: str = "hotline", password: str = PASSWORD, sequence: int = 1) -> Pdu:
        self.send(BindTransceiver(sequence=sequence, system_id=system_id, password=password))
        return await self.next_pdu()


@asynccontextmanager
async def bare_esme(smsc: Smsc) -> AsyncIterator[BareEsme]:
    reader, writer = await asyncio.open_connection("127.0.0.1", smsc.port)
    try:
        yield BareEsme(reader, writer)
    finally:
        writer.close()


@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    async with Smsc({"hotline": PASSWORD}) as peer:
        yield peer


@pytest.mark.parametrize(
    ("system_id", "password", "status"),
    [("hotline", "nope", Status.ESME_RINVPASWD), ("stranger", PASSWORD, Status.ESME_RINVSYSID)],
)
async def test_wrong_credentials_are_refused_with_their_status_then_closed(
    smsc: Smsc, system_id: str, password: str, status: Status
) -> None:
    async with bare_esme(smsc) as esme:
        answer = await esme.bind(system_id, password)
        assert isinstance(answer, smpp.BindTransceiverResp) and answer.status == status
        assert await esme.closed()
    assert [(bind.system_id, bind.status) for bind in smsc.binds] == [(system_id, status)]
    assert not smsc.bound()


@pytest.mark.parametrize("kind", [BindTransmitter, BindReceiver])
async def test_only_transceivers_are_served(smsc: Smsc, kind: type[BindTransmitter | BindReceiver]) -> None:
    async with bare_esme(smsc) as esme:
        esme.send(kind(sequence=3, system_id="hotline", password=PASSWORD))
        answer = await esme.next_pdu()
        assert answer.COMMAND == kind.COMMAND | 0x80000000 and answer.status == Status.ESME_RBINDFAIL


async def test_before_a_bind_only_enquire_link_is_served_and_a_second_bind_is_refused(smsc: Smsc) -> None:
    async with bare_esme(smsc) as esme:
        esme.send(SubmitSm(sequence=5, source_addr=HOTLINE, destination_addr=CITIZEN, short_message=b"x"))
        assert await esme.next_pdu() == GenericNack(sequence=5, status=Status.ESME_RINVBNDSTS)
        esme.send(EnquireLink(sequence=6))
        assert await esme.next_pdu() == EnquireLinkResp(sequence=6)
        assert (await esme.bind(sequence=7)).status == Status.ESME_ROK
        assert smsc.bound()
        assert (await esme.bind(sequence=8)).status == Status.ESME_RALYBND


async def test_submitted_parts_are_joined_per_destination_by_16_bit_udh_or_sar(smsc: Smsc) -> None:
    text = "您好，您反映的路灯问题已经转交城管部门处理，预计三个工作日内修复，感谢您对城市管理的支持与监督！" * 2
    parts = encode(text, ref=0)
    assert len(parts) == 2
    async with bare_esme(smsc) as esme:
        await esme.bind()
        for seq, part in enumerate(parts, start=1):  # 16-bit reference 0x0301, to one citizen
            udh = bytes([6, 8, 4, 3, 1, part.total, part.seq])
            esme.send(
                SubmitSm(
                    sequence=10 + seq,
                    source_addr=HOTLINE,
                    destination_addr=CITIZEN,
                    esm_class=0x40,
                    data_coding=8,
                    short_message=udh + part.payload,
                )
            )
        for seq, part in reversed(list(enumerate(parts, start=1))):  # SAR, to another, last part first
            esme.send(
                SubmitSm(
                    sequence=20 + seq,
                    source_addr=HOTLINE,
                    destination_addr="13900139000",
                    data_coding=8,
                    short_message=part.payload,
                    tlvs=smpp.sar_tlvs(0x0301, part.total, part.seq),
                )
            )
        answers = [await esme.next_pdu() for _ in range(4)]
        assert all(isinstance(answer, SubmitSmResp) and answer.status == 0 for answer in answers)
        [first] = await smsc.messages_to(CITIZEN)
        [second] = await smsc.messages_to("13900139000")
        assert first.text == second.text == text
        assert first.message_ids == tuple(answer.message_id for answer in answers[:2])  # type: ignore[attr-defined]
        assert smsc.submits[first.message_ids[0]].destination_addr == CITIZEN


async def test_a_deliver_sm_without_response_is_sent_again_under_a_new_sequence() -> None:
    async with Smsc({"hotline": PASSWORD}, response_timeout=0.2) as smsc, bare_esme(smsc) as esme:
        await esme.bind()
        [name] = await smsc.deliver(CITIZEN, HOTLINE, "路灯坏了")
        first = await esme.next_pdu()
        again = await esme.next_pdu()  # not answered: the SMSC tries again
        assert isinstance(first, DeliverSm) and isinstance(again, DeliverSm)
        assert again.sequence != first.sequence and again.short_message == first.short_message
        esme.send(DeliverSmResp(sequence=again.sequence))
        assert await smsc.results_of(name) == [Status.ESME_ROK]


async def test_a_deliver_sm_answered_with_an_error_is_sent_again(smsc: Smsc) -> None:
    async with bare_esme(smsc) as esme:
        await esme.bind()
        [name] = await smsc.deliver(CITIZEN, HOTLINE, "路灯坏了")
        first = await esme.next_pdu()
        esme.send(DeliverSmResp(sequence=first.sequence, status=Status.ESME_RX_T_APPN))
        again = await esme.next_pdu()
        esme.send(DeliverSmResp(sequence=again.sequence))
        assert await smsc.results_of(name, count=2) == [Status.ESME_RX_T_APPN, Status.ESME_ROK]


async def test_deliveries_wait_for_a_bind(smsc: Smsc) -> None:
    await smsc.deliver(CITIZEN, HOTLINE, "先到的短信")
    async with bare_esme(smsc) as esme:
        await esme.bind()
        pdu = await esme.next_pdu()
        assert isinstance(pdu, DeliverSm) and pdu.short_message == "先到的短信".encode("utf-16-be")


@pytest.mark.parametrize(("seconds", "stamp"), [(False, "2405060708"), (True, "240506070809")])
async def test_receipts_carry_appendix_b_text_and_tlvs(seconds: bool, stamp: str) -> None:
    moment = datetime(2024, 5, 6, 7, 8, 9)
    async with (
        Smsc({"hotline": PASSWORD}, receipt_seconds=seconds, now=lambda: moment) as smsc,
        bare_esme(smsc) as esme,
    ):
        await esme.bind()
        esme.send(SubmitSm(sequence=2, source_addr=HOTLINE, destination_addr=CITIZEN, short_message=b"ok"))
        answer = await esme.next_pdu()
        assert isinstance(answer, SubmitSmResp)
        smsc.receipt(answer.message_id, "UNDELIV")
        receipt = await esme.next_pdu()
        assert isinstance(receipt, DeliverSm) and receipt.esm_class == smpp.ESM_RECEIPT
        assert (receipt.source_addr, receipt.destination_addr) == (CITIZEN, HOTLINE)
        assert f"done date:{stamp} stat:UNDELIV" in receipt.short_message.decode()
        assert parse_receipt(receipt.short_message.decode()) == Receipt(
            answer.message_id, "failed", "001", moment.replace(second=moment.second if seconds else 0)
        )
        assert receipt.tlv(Tag.RECEIPTED_MESSAGE_ID) == answer.message_id.encode() + b"\x00"
        assert receipt.tlv(Tag.MESSAGE_STATE) == b"\x05"


@pytest.mark.parametrize(
    ("kind", "status", "fatal"),
    [
        ("unknown_command", Status.ESME_RINVCMDID, False),
        ("bad_length", Status.ESME_RINVCMDLEN, False),
        ("truncated", Status.ESME_RINVCMDLEN, False),
        ("no_nul", Status.ESME_RINVCMDLEN, False),
        ("overlong", Status.ESME_RINVSRCADR, False),
        ("fatal_length", Status.ESME_RINVCMDLEN, True),
    ],
)
def test_each_malformed_kind_is_the_fault_it_names(kind: str, status: Status, fatal: bool) -> None:
    decoder = smpp.Decoder()
    decoder.feed(malformed(kind, 0x4242))  # type: ignore[arg-type]
    with pytest.raises(SmppDecodeError) as raised:
        decoder.next_pdu()
    assert (raised.value.status, raised.value.sequence, raised.value.fatal) == (status, 0x4242, fatal)


async def test_malformed_bytes_are_answered_by_the_esme_and_recorded(smsc: Smsc) -> None:
    async with bare_esme(smsc) as esme:
        await esme.bind()
        waiting = asyncio.create_task(smsc.send_malformed("unknown_command"))
        with pytest.raises(SmppDecodeError) as raised:
            await esme.next_pdu()
        esme.send(GenericNack(sequence=raised.value.sequence or 0, status=raised.value.status))
        assert await waiting == GenericNack(sequence=raised.value.sequence or 0, status=Status.ESME_RINVCMDID)
        assert smsc.received(GenericNack) == [await waiting]


# --- the program ---------------------------------------------------------------------------------


def start_program(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "peers.smsc", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


async def read_line(process: subprocess.Popen[str], timeout: float = 30.0) -> str:
    assert process.stdout is not None
    return await asyncio.wait_for(asyncio.to_thread(process.stdout.readline), timeout)


@pytest.mark.slow
async def test_the_program_serves_and_send_injects_an_sms_the_session_receives() -> None:
    smpp_port, control_port = free_port(), free_port()
    control = f"127.0.0.1:{control_port}"
    serve = start_program(
        "serve", "--listen", f"127.0.0.1:{smpp_port}", "--account", f"hotline:{PASSWORD}", "--control", control
    )
    messages: list[InboundSms] = []
    arrived = asyncio.Event()

    async def on_message(message: InboundSms) -> None:
        messages.append(message)
        arrived.set()

    async def on_receipt(_: Receipt) -> None:
        return None

    try:
        assert (await read_line(serve)).startswith(f"smsc (SMPP 3.4) ready at 127.0.0.1:{smpp_port} ")
        link = SmppLink(SmppSettings("127.0.0.1", smpp_port, "hotline", PASSWORD, HOTLINE), on_message, on_receipt)
        task = asyncio.create_task(link.run())
        await wait_state(link, "bound", 30)
        send = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "-m",
                "peers.smsc",
                "send",
                "--from",
                CITIZEN,
                "--to",
                HOTLINE,
                "--text",
                "你好",
                "--control",
                control,
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert send.returncode == 0, send.stderr
        assert json.loads(send.stdout) == {"parts": 1, "statuses": ["ESME_ROK"]}
        await asyncio.wait_for(arrived.wait(), 10)
        assert [(m.text, m.source, m.dest) for m in messages] == [("你好", CITIZEN, HOTLINE)]
        await link.submit(OutboundSms(CITIZEN, "收到，谢谢", reference="p1"))
        assert await read_line(serve) == "SMS to 138****8000 (1 parts): 收到，谢谢\n"
        await link.stop()
        await asyncio.wait_for(task, 10)
    finally:
        serve.send_signal(signal.SIGINT)
        out, err = serve.communicate(timeout=30)
    assert_no_leaks(out + err, "python -m peers.smsc serve")
