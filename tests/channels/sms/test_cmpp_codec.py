"""The CMPP 3.0 codec: byte-exact vectors written from the spec's field tables, the authenticators
computed outside Python (md5sum), round trips of every PDU, and malformed input."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.channels.sms import cmpp
from gateway.channels.sms.cmpp import (
    MAX_PDU_SIZE,
    CmppDecodeError,
    Command,
    Connect,
    ConnectResp,
    Decoder,
    Deliver,
    DeliverResp,
    Frame,
    MsgIdParts,
    Result,
    StatusReport,
    Submit,
    SubmitResp,
    authenticator_ismg,
    authenticator_source,
    decode_body,
    encode,
    error_response,
    format_msg_id,
    msg_id_parts,
    timestamp_of,
)


def ostr(value: str, size: int) -> str:
    """An Octet String field as hex: the ASCII, then NUL bytes up to its size."""
    return value.encode("ascii").hex() + "00" * (size - len(value))


def hexbytes(*fields: str) -> bytes:
    return bytes.fromhex("".join(fields))


def decode_one(data: bytes) -> Frame:
    decoder = Decoder()
    decoder.feed(data)
    frame = decoder.next_frame()
    assert frame is not None
    assert decoder.buffered == 0
    return frame


# --- the authenticators ------------------------------------------------------------------------
# printf '901234\0\0\0\0\0\0\0\0\0s3cret-shared0102030405' | md5sum
AUTH_SOURCE = bytes.fromhex("ee51c955369d1174c42b73d096fb2f50")
# ( printf '\0\0\0\0'; printf ee51...2f50 | xxd -r -p; printf 's3cret-shared' ) | md5sum
AUTH_ISMG = bytes.fromhex("c3a3f0db27da77c70dfdb067aaa701c8")


def test_the_timestamp_is_mmddhhmmss_as_a_number() -> None:
    assert timestamp_of(datetime(2024, 1, 2, 3, 4, 5)) == 102030405
    assert timestamp_of(datetime(2024, 12, 31, 23, 59, 59)) == 1231235959


def test_authenticator_source_is_md5_of_sp_id_nine_nuls_secret_and_the_ten_digit_timestamp() -> None:
    # January's timestamp has 9 digits as a number; the authenticator hashes all 10.
    assert authenticator_source("901234", "s3cret-shared", 102030405) == AUTH_SOURCE


def test_authenticator_ismg_is_md5_of_the_four_byte_status_the_source_authenticator_and_secret() -> None:
    assert authenticator_ismg(0, AUTH_SOURCE, "s3cret-shared") == AUTH_ISMG
    assert authenticator_ismg(3, AUTH_SOURCE, "s3cret-shared") != AUTH_ISMG


# --- byte-exact vectors ------------------------------------------------------------------------


def test_connect_bytes() -> None:
    expected = hexbytes(
        "00000027",  # Total_Length 39 = 12 + 6 + 16 + 1 + 4
        "00000001",  # Command_Id CMPP_CONNECT
        "00000001",  # Sequence_Id
        ostr("901234", 6),  # Source_Addr
        AUTH_SOURCE.hex(),  # AuthenticatorSource
        "30",  # Version 3.0
        "0614dc45",  # Timestamp 0102030405
    )
    frame = Frame(1, Connect("901234", AUTH_SOURCE, 0x30, 102030405))
    assert encode(frame) == expected
    assert decode_one(expected) == frame


def test_connect_resp_bytes() -> None:
    expected = hexbytes(
        "00000021",  # 33 = 12 + 4 + 16 + 1
        "80000001",
        "00000001",
        "00000000",  # Status (4 bytes in 3.0)
        AUTH_ISMG.hex(),
        "30",
    )
    frame = Frame(1, ConnectResp(0, AUTH_ISMG, 0x30))
    assert encode(frame) == expected
    assert decode_one(expected) == frame


def test_submit_bytes() -> None:
    expected = hexbytes(
        "000000c7",  # 199 = 12 + 151 + 32 (one destination) + 4 (content)
        "00000004",  # CMPP_SUBMIT
        "0000002a",  # Sequence_Id 42
        "0000000000000000",  # Msg_Id (the ISMG's to fill)
        "01",  # Pk_total
        "01",  # Pk_number
        "01",  # Registered_Delivery
        "00",  # Msg_level
        ostr("HOTLINE", 10),  # Service_Id
        "02",  # Fee_UserType: the SP pays
        ostr("", 32),  # Fee_terminal_Id
        "00",  # Fee_terminal_type
        "00",  # TP_pId
        "00",  # TP_udhi
        "08",  # Msg_Fmt UCS-2
        ostr("901234", 6),  # Msg_src
        ostr("01", 2),  # FeeType: free
        ostr("000000", 6),  # FeeCode
        ostr("", 17),  # ValId_Time
        ostr("", 17),  # At_Time
        ostr("106353112345", 21),  # Src_Id
        "01",  # DestUsr_tl
        ostr("13800138000", 32),  # Dest_terminal_Id
        "00",  # Dest_terminal_type
        "04",  # Msg_Length
        "4f60597d",  # Msg_Content 你好 in UCS-2
        ostr("", 20),  # LinkID
    )
    submit = Submit(
        service_id="HOTLINE",
        msg_src="901234",
        src_id="106353112345",
        dest_terminal_ids=("13800138000",),
        msg_fmt=8,
        msg_content="你好".encode("utf-16-be"),
    )
    assert encode(Frame(42, submit)) == expected
    assert decode_one(expected) == Frame(42, submit)


def test_submit_resp_bytes() -> None:
    expected = hexbytes("00000018", "80000004", "0000002a", "110c4141e240002a", "00000008")
    frame = Frame(42, SubmitResp(0x110C4141E240002A, Result.FLOW_CONTROL))
    assert encode(frame) == expected
    assert decode_one(expected) == frame


DELIVER_MSG_ID = "110c4141e240002a"


def test_deliver_bytes() -> None:
    expected = hexbytes(
        "00000071",  # 113 = 12 + 97 + 4
        "00000005",  # CMPP_DELIVER
        "00000007",
        DELIVER_MSG_ID,  # Msg_Id
        ostr("106353112345", 21),  # Dest_Id
        ostr("", 10),  # Service_Id
        "00",  # TP_pid
        "00",  # TP_udhi
        "08",  # Msg_Fmt
        ostr("13800138000", 32),  # Src_terminal_Id
        "00",  # Src_terminal_type
        "00",  # Registered_Delivery: a message
        "04",  # Msg_Length
        "4f60597d",  # 你好
        ostr("", 20),  # LinkID
    )
    deliver = Deliver(
        msg_id=int(DELIVER_MSG_ID, 16),
        dest_id="106353112345",
        src_terminal_id="13800138000",
        msg_fmt=8,
        msg_content="你好".encode("utf-16-be"),
    )
    assert encode(Frame(7, deliver)) == expected
    assert decode_one(expected) == Frame(7, deliver)


def test_status_report_bytes() -> None:
    report_hex = (
        "110c4141e240002a"  # Msg_Id of the SUBMIT reported on
        + ostr("DELIVRD", 7)  # Stat
        + ostr("2401021504", 10)  # Submit_time
        + ostr("2401021505", 10)  # Done_time
        + ostr("13800138000", 32)  # Dest_terminal_Id
        + "00000007"  # SMSC_sequence
    )
    expected = hexbytes(
        "000000b4",  # 180 = 12 + 97 + 71
        "00000005",
        "00000008",
        "110c4141e240002b",  # the report's own Msg_Id
        ostr("106353112345", 21),
        ostr("", 10),
        "00",
        "00",
        "00",  # Msg_Fmt
        ostr("13800138000", 32),
        "00",
        "01",  # Registered_Delivery: a status report
        "47",  # Msg_Length 71
        report_hex,
        ostr("", 20),
    )
    report = StatusReport(0x110C4141E240002A, "DELIVRD", "2401021504", "2401021505", "13800138000", 7)
    assert report.serialize().hex() == report_hex
    deliver = Deliver(
        msg_id=0x110C4141E240002B,
        dest_id="106353112345",
        src_terminal_id="13800138000",
        msg_fmt=0,
        msg_content=report.serialize(),
        registered_delivery=1,
    )
    assert encode(Frame(8, deliver)) == expected
    decoded = decode_one(expected)
    assert decoded == Frame(8, deliver)
    assert isinstance(decoded.pdu, Deliver)
    assert StatusReport.parse(decoded.pdu.msg_content) == report


def test_bodyless_pdus() -> None:
    for command, pdu in (
        (Command.TERMINATE, cmpp.Terminate()),
        (Command.TERMINATE_RESP, cmpp.TerminateResp()),
        (Command.ACTIVE_TEST, cmpp.ActiveTest()),
    ):
        data = hexbytes("0000000c", f"{command:08x}", "00000005")
        assert encode(Frame(5, pdu)) == data
        assert decode_one(data) == Frame(5, pdu)
    data = hexbytes("0000000d", "80000008", "00000005", "00")  # ACTIVE_TEST_RESP: Reserved
    assert encode(Frame(5, cmpp.ActiveTestResp())) == data


# --- Msg_Id ------------------------------------------------------------------------------------


def test_msg_id_bit_layout_read_the_way_a_packet_dissector_reads_it() -> None:
    parts = MsgIdParts(month=12, day=31, hour=23, minute=59, second=58, ismg=0x2ABCDE, sequence=0xBEEF)
    raw = parts.value().to_bytes(8, "big")

    def word(at: int, size: int) -> int:
        return int.from_bytes(raw[at : at + size], "big")

    assert (raw[0] & 0xF0) >> 4 == 12
    assert (word(0, 2) & 0x0F80) >> 7 == 31
    assert (raw[1] & 0x7C) >> 2 == 23
    assert (word(1, 2) & 0x03F0) >> 4 == 59
    assert (word(2, 2) & 0x0FC0) >> 6 == 58
    assert (word(3, 4) & 0x3FFFFF00) >> 8 == 0x2ABCDE
    assert word(6, 2) == 0xBEEF
    assert msg_id_parts(parts.value()) == parts


def test_a_msg_id_renders_as_sixteen_hex_digits() -> None:
    assert format_msg_id(0x2A) == "000000000000002a"
    assert format_msg_id(0xFFFFFFFFFFFFFFFF) == "ffffffffffffffff"


# --- round trips -------------------------------------------------------------------------------

OCTETS = st.characters(min_codepoint=1, max_codepoint=0xFF)


def field_strategy(kind: Any) -> st.SearchStrategy[Any]:
    if isinstance(kind, cmpp._Uint):
        return st.integers(0, (1 << (8 * kind.size)) - 1)
    if isinstance(kind, cmpp._Str):
        return st.text(OCTETS, max_size=kind.size)
    if isinstance(kind, cmpp._Raw):
        return st.binary(min_size=kind.size, max_size=kind.size)
    if isinstance(kind, cmpp._Terminals):
        return st.lists(st.text(OCTETS, max_size=32), min_size=1, max_size=5).map(tuple)
    return st.binary(max_size=255)


def pdu_strategy(cls: Any) -> st.SearchStrategy[Any]:
    fields = {name: field_strategy(kind) for name, kind in cls.FIELDS}
    if cls is Deliver:  # a status report's content is a report
        report = st.builds(StatusReport, **{name: field_strategy(kind) for name, kind in StatusReport.FIELDS})
        report_fields = {**fields, "registered_delivery": st.just(1), "msg_content": report.map(StatusReport.serialize)}
        return st.one_of(
            st.builds(cls, **{**fields, "registered_delivery": st.just(0)}),
            st.builds(cls, **report_fields),
        )
    return st.builds(cls, **fields)


ANY_FRAME = st.builds(
    Frame, st.integers(0, 0xFFFFFFFF), st.one_of([pdu_strategy(cls) for cls in cmpp.PDU_TYPES.values()])
)


@given(frames=st.lists(ANY_FRAME, min_size=1, max_size=6), cuts=st.lists(st.integers(1, 400), max_size=12))
def test_any_frames_cut_anywhere_decode_to_themselves(frames: list[Frame], cuts: list[int]) -> None:
    stream = b"".join(encode(frame) for frame in frames)
    decoder = Decoder()
    decoded: list[Frame] = []
    position = 0
    for size in [*cuts, len(stream)]:
        decoder.feed(stream[position : position + size])
        position += size
        while (frame := decoder.next_frame()) is not None:
            decoded.append(frame)
    assert decoded == frames
    assert decoder.buffered == 0


# --- what encode refuses -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"src_id": "1" * 22}, "src_id"),
        ({"service_id": "业务"}, "service_id"),
        ({"msg_src": "90\x0034"}, "msg_src"),
        ({"pk_total": 256}, "pk_total"),
        ({"msg_content": bytes(256)}, "msg_content"),
        ({"dest_terminal_ids": ()}, "dest_terminal_ids"),
        ({"dest_terminal_ids": ("1",) * 101}, "dest_terminal_ids"),
    ],
)
def test_encode_refuses_a_value_its_field_cannot_hold(changes: dict[str, Any], field: str) -> None:
    bad = dataclasses.replace(Submit("HOTLINE", "901234", "106353112345", ("13800138000",), 8, b""), **changes)
    with pytest.raises(ValueError, match=field):
        encode(Frame(1, bad))


# --- malformed input ---------------------------------------------------------------------------

GOOD = encode(Frame(9, cmpp.ActiveTest()))


@pytest.mark.parametrize("total_length", [0, 11, MAX_PDU_SIZE + 1, 0xFFFFFFFF])
def test_a_total_length_out_of_bounds_is_fatal_and_names_the_sequence_id(total_length: int) -> None:
    decoder = Decoder()
    decoder.feed(hexbytes(f"{total_length:08x}", "00000005", "00000063") + GOOD)
    with pytest.raises(CmppDecodeError) as caught:
        decoder.next_frame()
    assert caught.value.fatal
    assert caught.value.sequence_id == 0x63
    assert caught.value.command_id == Command.DELIVER
    assert decoder.buffered == 0  # nothing is kept of a stream that cannot be framed
    with pytest.raises(CmppDecodeError):  # and it stays broken
        decoder.next_frame()


def test_an_unknown_command_is_skipped_and_the_next_frame_reads() -> None:
    decoder = Decoder()
    decoder.feed(hexbytes("00000010", "00000077", "00000011", "deadbeef") + GOOD)
    with pytest.raises(CmppDecodeError) as caught:
        decoder.next_frame()
    error = caught.value
    assert (error.fatal, error.sequence_id, error.command_id, error.result) == (False, 0x11, 0x77, Result.BAD_COMMAND)
    assert error_response(error) is None  # CMPP has no response to a command it does not define
    assert decoder.next_frame() == Frame(9, cmpp.ActiveTest())


def truncated_deliver() -> bytes:
    whole = encode(
        Frame(
            0x21,
            Deliver(msg_id=0xABC, dest_id="106353112345", src_terminal_id="13800138000", msg_fmt=8, msg_content=b"\0a"),
        )
    )
    body = whole[12:60]  # the header then says 60 bytes: a DELIVER cut short
    return len(body + whole[:12]).to_bytes(4, "big") + whole[4:12] + body


def test_a_truncated_deliver_is_answered_with_its_msg_id_and_a_length_error() -> None:
    decoder = Decoder()
    decoder.feed(truncated_deliver() + GOOD)
    with pytest.raises(CmppDecodeError) as caught:
        decoder.next_frame()
    error = caught.value
    assert not error.fatal
    assert error_response(error) == Frame(0x21, DeliverResp(0xABC, Result.BAD_LENGTH))
    assert decoder.next_frame() == Frame(9, cmpp.ActiveTest())


def test_a_msg_length_that_disagrees_with_total_length_is_an_error() -> None:
    deliver = Deliver(msg_id=1, dest_id="1", src_terminal_id="2", msg_fmt=8, msg_content=b"abcd")
    body = bytearray(encode(Frame(3, deliver))[12:])
    body[76] = 5  # Msg_Length says 5, 4 bytes follow before LinkID
    with pytest.raises(CmppDecodeError, match="cut short"):
        decode_body(Command.DELIVER, 3, bytes(body))
    with pytest.raises(CmppDecodeError, match="beyond its fields"):
        decode_body(Command.DELIVER, 3, bytes(body) + b"\0\0")  # LinkID takes one: one is left over


def test_a_status_report_must_be_71_bytes() -> None:
    deliver = Deliver(
        msg_id=1, dest_id="1", src_terminal_id="2", msg_fmt=0, msg_content=bytes(60), registered_delivery=1
    )
    with pytest.raises(CmppDecodeError, match="status report of 60 bytes") as caught:
        decode_one(encode(Frame(4, deliver)))
    assert error_response(caught.value) == Frame(4, DeliverResp(1, Result.BAD_LENGTH))


def test_a_malformed_connect_is_answered_with_status_1_and_a_malformed_response_with_nothing() -> None:
    with pytest.raises(CmppDecodeError) as connect:
        decode_body(Command.CONNECT, 1, b"901234")
    answer = error_response(connect.value)
    assert answer is not None and isinstance(answer.pdu, ConnectResp) and answer.pdu.status == 1
    with pytest.raises(CmppDecodeError) as response:
        decode_body(Command.SUBMIT_RESP, 2, b"\0\0")
    assert error_response(response.value) is None
