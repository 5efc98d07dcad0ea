"""The SMPP 3.4 codec without I/O: byte-exact vectors written from the spec, round trips of every
PDU, and every kind of malformed input answered with the right status."""

from __future__ import annotations

import string
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.channels.sms import smpp
from gateway.channels.sms.smpp import (
    BindReceiver,
    BindReceiverResp,
    BindTransceiver,
    BindTransceiverResp,
    BindTransmitter,
    BindTransmitterResp,
    Decoder,
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
    decode,
    encode,
    error_response,
)
from gateway.channels.sms.text import Part, Receipt


def header(length: int, command_id: int, status: int, sequence: int) -> str:
    return f"{length:08x}{command_id:08x}{status:08x}{sequence:08x}"


def test_bind_transceiver_byte_exact() -> None:
    expected = bytes.fromhex(
        header(36, 0x00000009, 0, 1)
        + "686f746c696e6500"  # system_id "hotline"
        + "73336372657400"  # password "s3cret"
        + "00"  # system_type ""
        + "34"  # interface_version 3.4
        + "00" + "00"  # addr_ton, addr_npi
        + "00"  # address_range ""
    )  # fmt: skip
    pdu = BindTransceiver(sequence=1, system_id="hotline", password="s3cret")
    assert encode(pdu) == expected
    assert decode(expected) == pdu


def test_bind_transceiver_resp_byte_exact_with_sc_interface_version() -> None:
    expected = bytes.fromhex(header(26, 0x80000009, 0, 1) + "534d534300" + "0210" + "0001" + "34")
    pdu = BindTransceiverResp(sequence=1, system_id="SMSC", tlvs=(Tlv(Tag.SC_INTERFACE_VERSION, b"\x34"),))
    assert encode(pdu) == expected
    assert decode(expected) == pdu


def test_submit_sm_with_a_udh_byte_exact() -> None:
    short_message = "0500032a0201" + "4f60597d"  # concatenation ref 0x2a, part 1 of 2; "你好" in UCS-2
    expected = bytes.fromhex(
        header(59, 0x00000004, 0, 7)
        + "00"  # service_type ""
        + "00" + "01" + "313233343500"  # source: ton 0, npi 1 (E.164), "12345"
        + "00" + "01" + "313338303031333830303000"  # destination "13800138000"
        + "40"  # esm_class: UDHI
        + "00" + "00"  # protocol_id, priority_flag
        + "00" + "00"  # schedule_delivery_time, validity_period: empty
        + "01"  # registered_delivery: final receipt
        + "00"  # replace_if_present_flag
        + "08"  # data_coding: UCS-2
        + "00"  # sm_default_msg_id
        + "0a" + short_message  # sm_length 10
    )  # fmt: skip
    part = Part(
        data_coding=8, udh=bytes.fromhex("0500032a0201"), payload="你好".encode("utf-16-be"), ref=42, total=2, seq=1
    )
    pdu = smpp.submit_sm_for(part, sequence=7, source="12345", dest="13800138000", registered_delivery=1)
    assert encode(pdu) == expected
    assert decode(expected) == pdu


RECEIPT_TEXT = b"id:A1 sub:001 dlvrd:001 submit date:2401311405 done date:240131140659 stat:DELIVRD err:000 text:"


def test_deliver_sm_receipt_byte_exact() -> None:
    expected = bytes.fromhex(
        header(16 + 35 + len(RECEIPT_TEXT) + 7 + 5, 0x00000005, 0, 0x01020304)
        + "00"  # service_type
        + "01" + "01" + "38363133383030313338303030" + "00"  # source: international "8613800138000"
        + "00" + "01" + "313233343500"  # destination "12345"
        + "04"  # esm_class: SMSC delivery receipt
        + "00" + "00" + "00" + "00" + "00"  # pid, priority, the two times, registered_delivery
        + "00"  # replace_if_present_flag
        + "00"  # data_coding
        + "00"  # sm_default_msg_id
        + f"{len(RECEIPT_TEXT):02x}" + RECEIPT_TEXT.hex()
        + "001e" + "0003" + "413100"  # receipted_message_id "A1"
        + "0427" + "0001" + "02"  # message_state DELIVERED
    )  # fmt: skip
    pdu = DeliverSm(
        sequence=0x01020304,
        source_addr="8613800138000",
        destination_addr="12345",
        short_message=RECEIPT_TEXT,
        source_addr_ton=1,
        source_addr_npi=1,
        dest_addr_npi=1,
        esm_class=0x04,
        tlvs=(Tlv(Tag.RECEIPTED_MESSAGE_ID, b"A1\x00"), Tlv(Tag.MESSAGE_STATE, b"\x02")),
    )
    assert encode(pdu) == expected
    assert decode(expected) == pdu
    assert smpp.is_receipt(pdu)
    assert smpp.receipt_of(pdu) == Receipt("A1", "delivered", "000", datetime(2024, 1, 31, 14, 6, 59))


def test_an_error_response_goes_without_a_body_as_the_spec_writes_it() -> None:
    expected = bytes.fromhex(header(16, 0x80000004, 0x58, 9))
    assert encode(SubmitSmResp(sequence=9, status=Status.ESME_RTHROTTLED)) == expected
    assert decode(expected) == SubmitSmResp(sequence=9, status=0x58)
    # ...and one that has a body anyway is read too
    assert decode(bytes.fromhex(header(17, 0x80000004, 0x58, 9) + "00")) == SubmitSmResp(sequence=9, status=0x58)
    assert encode(GenericNack(sequence=4, status=3)) == bytes.fromhex(header(16, 0x80000000, 3, 4))


# --- Round trips --------------------------------------------------------------------------------


def c_strings(size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=string.printable, max_size=size - 1)


sequences = st.integers(0, 0xFFFFFFFF)
statuses = st.integers(0, 0xFFFFFFFF)
bytes_1 = st.integers(0, 0xFF)
times = st.one_of(st.just(""), st.from_regex(r"[0-9]{12}[0-9][0-9]{2}[+\-R]", fullmatch=True))
tlvs = st.lists(
    st.one_of(
        st.builds(Tlv, st.sampled_from([Tag.SAR_TOTAL_SEGMENTS, Tag.MESSAGE_STATE]), st.binary(min_size=1, max_size=1)),
        st.builds(Tlv, st.just(Tag.SAR_MSG_REF_NUM), st.binary(min_size=2, max_size=2)),
        st.builds(Tlv, st.just(Tag.MESSAGE_PAYLOAD), st.binary(max_size=600)),
        st.builds(Tlv, st.just(Tag.RECEIPTED_MESSAGE_ID), c_strings(65).map(lambda text: text.encode() + b"\x00")),
        st.builds(Tlv, st.integers(0x1400, 0x3FFF), st.binary(max_size=20)),  # vendor-specific: kept as they came
    ),
    max_size=4,
).map(tuple)


def binds(cls: type[Any]) -> st.SearchStrategy[Pdu]:
    return st.builds(
        cls,
        sequence=sequences,
        system_id=c_strings(16),
        password=c_strings(9),
        system_type=c_strings(13),
        interface_version=bytes_1,
        addr_ton=bytes_1,
        addr_npi=bytes_1,
        address_range=c_strings(41),
    )


def short_message_pdus(cls: type[Any]) -> st.SearchStrategy[Pdu]:
    return st.builds(
        cls,
        sequence=sequences,
        source_addr=c_strings(21),
        destination_addr=c_strings(21),
        short_message=st.binary(max_size=254),
        service_type=c_strings(6),
        source_addr_ton=bytes_1,
        source_addr_npi=bytes_1,
        dest_addr_ton=bytes_1,
        dest_addr_npi=bytes_1,
        esm_class=bytes_1,
        protocol_id=bytes_1,
        priority_flag=bytes_1,
        schedule_delivery_time=times,
        validity_period=times,
        registered_delivery=bytes_1,
        replace_if_present_flag=bytes_1,
        data_coding=bytes_1,
        sm_default_msg_id=bytes_1,
        tlvs=tlvs,
    )


every_pdu = st.one_of(
    *(binds(cls) for cls in (BindTransceiver, BindTransmitter, BindReceiver)),
    *(
        st.builds(cls, sequence=sequences, status=statuses, system_id=c_strings(16), tlvs=tlvs)
        for cls in (BindTransceiverResp, BindTransmitterResp, BindReceiverResp)
    ),
    *(st.builds(cls, sequence=sequences) for cls in (Unbind, EnquireLink)),
    *(st.builds(cls, sequence=sequences, status=statuses) for cls in (UnbindResp, EnquireLinkResp, GenericNack)),
    short_message_pdus(SubmitSm),
    short_message_pdus(DeliverSm),
    *(
        st.builds(cls, sequence=sequences, status=statuses, message_id=c_strings(65))
        for cls in (SubmitSmResp, DeliverSmResp)
    ),
)


@given(every_pdu)
def test_every_pdu_round_trips(pdu: Pdu) -> None:
    data = encode(pdu)
    assert int.from_bytes(data[:4], "big") == len(data)
    assert decode(data) == pdu


def test_the_round_trips_cover_every_pdu_class() -> None:
    assert {cls.__name__ for cls in smpp.PDU_CLASSES.values()} == {
        "GenericNack",
        "BindReceiver",
        "BindReceiverResp",
        "BindTransmitter",
        "BindTransmitterResp",
        "BindTransceiver",
        "BindTransceiverResp",
        "Unbind",
        "UnbindResp",
        "EnquireLink",
        "EnquireLinkResp",
        "SubmitSm",
        "SubmitSmResp",
        "DeliverSm",
        "DeliverSmResp",
    }


@given(st.lists(every_pdu, min_size=1, max_size=6), st.data())
def test_the_decoder_frames_a_stream_cut_anywhere(pdus: list[Pdu], data: st.DataObject) -> None:
    stream = b"".join(encode(pdu) for pdu in pdus)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    decoder = Decoder()
    out: list[Pdu] = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        decoder.feed(stream[start:end])
        while (pdu := decoder.next_pdu()) is not None:
            out.append(pdu)
    assert out == pdus
    assert decoder.buffered == 0


# --- Malformed input ------------------------------------------------------------------------------


def frame(command_id: int, body: bytes, sequence: int = 77, length: int | None = None) -> bytes:
    return bytes.fromhex(header(length if length is not None else 16 + len(body), command_id, 0, sequence)) + body


def submit_body(source: bytes = b"12345\x00", rest: bytes | None = None) -> bytes:
    fixed = b"\x00" + b"\x00\x01" + source + b"\x00\x01" + b"13800138000\x00" + b"\x00\x00\x00" + b"\x00\x00"
    return fixed + (rest if rest is not None else b"\x01\x00\x08\x00" + b"\x02" + "你".encode("utf-16-be"))


@pytest.mark.parametrize(
    ("data", "status", "message"),
    [
        (frame(0x00000103, b""), Status.ESME_RINVCMDID, "unknown command_id 0x00000103"),  # data_sm: not read
        (frame(0x00000004, submit_body()[:20]), Status.ESME_RINVCMDLEN, "destination_addr has no NUL"),
        (frame(0x00000004, submit_body()[:-3]), Status.ESME_RINVCMDLEN, "ends before short_message"),
        (frame(0x00000004, submit_body()[:-1]), Status.ESME_RINVCMDLEN, "sm_length 2 but 1 bytes follow"),
        (frame(0x00000004, b"\x00\x00\x01" + b"12345"), Status.ESME_RINVCMDLEN, "source_addr has no NUL"),
        (frame(0x00000004, submit_body(b"1" * 21 + b"\x00")), Status.ESME_RINVSRCADR, "longer than 20"),
        (frame(0x00000004, submit_body(rest=b"\x01\x00\x08\x00\xff" + bytes(255))), Status.ESME_RINVMSGLEN, "254"),
        (frame(0x00000004, submit_body() + b"\x02\x0c\x00"), Status.ESME_RINVOPTPARSTREAM, "cut short"),
        (frame(0x00000004, submit_body() + b"\x02\x0c\x00\x05ab"), Status.ESME_RINVOPTPARSTREAM, "says 5"),
        (frame(0x00000004, submit_body() + b"\x02\x0c\x00\x01a"), Status.ESME_RINVPARLEN, "0x020c of 1 bytes"),
        (frame(0x00000015, b"\x00"), Status.ESME_RINVCMDLEN, "1 bytes after the body"),
        (frame(0x00000009, b"sys\x00pw\x00\x00\x34\x00"), Status.ESME_RINVCMDLEN, "ends before addr_npi"),
        (frame(0x00000009, b"sys\x00" + b"p" * 9 + b"\x00\x00\x34\x00\x00\x00"), Status.ESME_RINVPASWD, "password"),
        (frame(0x00000004, submit_body(b"12\xe4\x00")), Status.ESME_RINVSRCADR, "source_addr is not a valid"),
    ],
)
def test_malformed_pdus_name_their_fault_and_keep_the_sequence(data: bytes, status: int, message: str) -> None:
    decoder = Decoder()
    decoder.feed(data + encode(EnquireLink(sequence=78)))
    with pytest.raises(SmppDecodeError, match=message) as raised:
        decoder.next_pdu()
    assert (raised.value.status, raised.value.sequence, raised.value.fatal) == (status, 77, False)
    assert error_response(raised.value) == GenericNack(sequence=77, status=status)
    assert decoder.next_pdu() == EnquireLink(sequence=78)  # the stream goes on


@pytest.mark.parametrize("length", [0, 15, smpp.MAX_PDU_SIZE + 1, 0xFFFFFFFF])
def test_a_command_length_outside_the_bounds_is_fatal_and_buffers_nothing(length: int) -> None:
    decoder = Decoder()
    decoder.feed(frame(0x00000015, b"", sequence=5, length=length) + bytes(100))
    for _ in range(2):  # the stream cannot be framed again: the same error each time
        with pytest.raises(SmppDecodeError, match=f"command_length {length}") as raised:
            decoder.next_pdu()
        assert (raised.value.status, raised.value.sequence, raised.value.fatal) == (Status.ESME_RINVCMDLEN, 5, True)
    assert decoder.buffered == 0
    assert error_response(raised.value) == GenericNack(sequence=5, status=Status.ESME_RINVCMDLEN)


def test_the_decoder_holds_at_most_one_pdu_in_waiting() -> None:
    decoder = Decoder(max_pdu=100)
    decoder.feed(frame(0x00000015, b"", length=100) + bytes(44))
    assert decoder.next_pdu() is None and decoder.buffered == 60


def test_a_malformed_response_is_not_answered() -> None:
    with pytest.raises(SmppDecodeError) as raised:
        decode(frame(0x80000004, b"abc"))
    assert raised.value.command_id == 0x80000004
    assert error_response(raised.value) is None


@pytest.mark.parametrize(
    ("pdu", "message"),
    [
        (SubmitSm(sequence=1, source_addr="1" * 21, destination_addr="2"), "source_addr must be ASCII"),
        (SubmitSm(sequence=1, source_addr="你", destination_addr="2"), "source_addr must be ASCII"),
        (SubmitSm(sequence=1, source_addr="a\x00b", destination_addr="2"), "without NUL"),
        (SubmitSm(sequence=1, source_addr="1", destination_addr="2", short_message=bytes(255)), "at most 254"),
        (SubmitSm(sequence=1, source_addr="1", destination_addr="2", validity_period="1"), "empty or 16"),
        (SubmitSm(sequence=1, source_addr="1", destination_addr="2", esm_class=256), "not one byte"),
        (SubmitSm(sequence=1, source_addr="1", destination_addr="2", tlvs=(Tlv(1, bytes(0x10000)),)), "does not fit"),
        (EnquireLink(sequence=1 << 32), "not 32-bit"),
    ],
)
def test_encode_refuses_what_decode_would(pdu: Pdu, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        encode(pdu)


def test_a_bind_never_shows_its_password() -> None:
    pdu = BindTransceiver(sequence=1, system_id="hotline", password="s3cret")
    assert "s3cret" not in repr(pdu) and "s3cret" not in str(pdu)
    assert "s3cret" not in repr(BindTransmitter(sequence=1, system_id="x", password="s3cret"))


# --- Reading what the session needs -----------------------------------------------------------


def test_a_receipt_whose_text_is_not_appendix_b_is_read_from_its_tlvs() -> None:
    pdu = DeliverSm(
        sequence=1,
        source_addr="x",
        destination_addr="y",
        esm_class=0x04,
        short_message=b"your message was delivered",
        tlvs=(Tlv(Tag.RECEIPTED_MESSAGE_ID, b"ff01\x00"), Tlv(Tag.MESSAGE_STATE, b"\x05")),
    )
    assert smpp.receipt_of(pdu) == Receipt("ff01", "failed", "", None)
    with pytest.raises(ValueError, match="not a delivery receipt"):
        smpp.receipt_of(DeliverSm(sequence=1, source_addr="x", destination_addr="y", short_message=b"hello"))


def test_the_receipted_message_id_wins_over_the_texts_id() -> None:
    pdu = DeliverSm(
        sequence=1,
        source_addr="x",
        destination_addr="y",
        esm_class=0x04,
        short_message=b"id:255 stat:UNDELIV err:001",  # the same message in decimal
        tlvs=(Tlv(Tag.RECEIPTED_MESSAGE_ID, b"ff\x00"),),
    )
    assert smpp.receipt_of(pdu) == Receipt("ff", "failed", "001", None)


def test_a_message_is_not_a_receipt() -> None:
    assert not smpp.is_receipt(DeliverSm(sequence=1, source_addr="x", destination_addr="y", esm_class=0x40))
    assert smpp.is_receipt(DeliverSm(sequence=1, source_addr="x", destination_addr="y", esm_class=0x20))


def test_the_fingerprint_survives_a_redelivery_and_tells_messages_apart() -> None:
    first = DeliverSm(sequence=1, source_addr="13800138000", destination_addr="12345", short_message=b"hi")
    again = DeliverSm(sequence=99, source_addr="13800138000", destination_addr="12345", short_message=b"hi")
    other = DeliverSm(sequence=1, source_addr="13800138000", destination_addr="12345", short_message=b"ho")
    assert smpp.fingerprint(first) == smpp.fingerprint(again) != smpp.fingerprint(other)


def test_status_names() -> None:
    assert smpp.status_name(0x58) == "ESME_RTHROTTLED"
    assert smpp.status_name(0x400) == "status 0x00000400"
