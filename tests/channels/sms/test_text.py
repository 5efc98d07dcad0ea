"""The SMS text core: alphabets, splitting, UDH, reassembly and receipts, without any I/O."""

from __future__ import annotations

from datetime import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.channels.sms.text import (
    GSM,
    GSM_DEFAULT,
    GSM_EXTENSION,
    UCS2,
    Complete,
    Incomplete,
    Part,
    PartKey,
    Reassembler,
    ReassemblyFull,
    Udh,
    decode_parts,
    decode_payload,
    encode,
    is_text_coding,
    parse_receipt,
    parse_udh,
    receipt_state,
)

gsm_chars = st.sampled_from([char for char in GSM_DEFAULT if char != "\x1b"] + list(GSM_EXTENSION))
gsm_texts = st.text(alphabet=gsm_chars, max_size=700)
# Hypothesis' text() leaves out lone surrogates by default: astral characters (pairs in UTF-16) stay in.
any_texts = st.one_of(
    st.text(max_size=600),
    gsm_texts,
    st.text(alphabet=st.sampled_from("中文😀𠀀€{a"), max_size=400),
)


def reassemble(parts: list[Part], order: list[int]) -> str:
    reassembler: Reassembler[tuple[int, bytes]] = Reassembler()
    done: list[Complete[tuple[int, bytes]]] = []
    for index in order:
        part = parts[index]
        udh, body = parse_udh(part.short_message) if part.udh else (None, part.payload)
        total, seq, ref = (udh.total, udh.seq, udh.ref) if udh else (1, 1, 0)
        complete = reassembler.add(PartKey("13800138000", "12345", ref, total), seq, (part.data_coding, body), 0.0)
        if complete:
            done.append(complete)
    assert len(done) == 1 and len(reassembler) == 0
    codings = {coding for coding, _ in done[0].parts}
    assert len(codings) == 1
    return decode_payload(b"".join(body for _, body in done[0].parts), codings.pop())


@given(data=st.data(), text=any_texts)
def test_any_text_split_then_reassembled_in_any_order_is_the_text(data: st.DataObject, text: str) -> None:
    parts = encode(text, ref=42)
    order = data.draw(st.permutations(range(len(parts))))
    assert reassemble(parts, order) == text


@given(text=any_texts)
def test_every_part_decodes_alone_no_pair_is_split(text: str) -> None:
    parts = encode(text, ref=1)
    assert "".join(decode_payload(part.payload, part.data_coding) for part in parts) == text
    for part in parts[:-1]:
        if part.data_coding == UCS2:
            assert not 0xD8 <= part.payload[-2] <= 0xDB  # no high surrogate left at a part's end
        else:
            assert part.payload[-1] != 0x1B  # no escape left at a part's end


@given(text=any_texts)
def test_parts_respect_the_sizes_and_number_themselves(text: str) -> None:
    parts = encode(text, ref=9)
    total = len(parts)
    for seq, part in enumerate(parts, start=1):
        assert (part.total, part.seq, part.ref) == (total, seq, 9)
        if total == 1:
            assert part.udh == b""
            assert len(part.payload) <= (160 if part.data_coding == GSM else 140)
        else:
            assert part.udh == bytes([5, 0, 3, 9, total, seq])
            assert len(part.payload) <= (153 if part.data_coding == GSM else 134)


@pytest.mark.parametrize(
    ("text", "sizes", "coding"),
    [
        ("中" * 70, [140], UCS2),
        ("中" * 71, [134, 8], UCS2),
        ("中" * 134, [134, 134], UCS2),
        ("中" * 135, [134, 134, 2], UCS2),
        ("中" * 66 + "😀" + "中" * 3, [132, 10], UCS2),  # the pair would straddle 67 units: it moves whole
        ("😀" * 35, [140], UCS2),
        ("a" * 160, [160], GSM),
        ("a" * 161, [153, 8], GSM),
        ("€" * 80, [160], GSM),
        ("a" * 152 + "€" * 5, [152, 10], GSM),  # the escape pair would straddle 153 septets
        ("", [0], GSM),
    ],
)
def test_the_67_153_70_160_boundaries(text: str, sizes: list[int], coding: int) -> None:
    parts = encode(text, ref=3)
    assert [len(part.payload) for part in parts] == sizes
    assert {part.data_coding for part in parts} == {coding}


def test_one_character_outside_gsm_makes_the_whole_text_ucs2() -> None:
    assert encode("Hello 你", ref=0)[0].data_coding == UCS2
    assert encode("Hello `", ref=0)[0].data_coding == UCS2  # a backtick has no septet
    assert encode("Hello {€}", ref=0)[0].payload == b"Hello \x1b\x28\x1b\x65\x1b\x29"
    assert encode("Hello", ref=0, allow_gsm=False)[0].payload == "Hello".encode("utf-16-be")


def test_what_no_sms_can_carry_is_refused_clearly() -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        encode("ab\ud800c", ref=0)
    with pytest.raises(ValueError, match="at most 255"):
        encode("中" * (67 * 255 + 1), ref=0)
    assert len(encode("中" * (67 * 255), ref=0)) == 255
    with pytest.raises(ValueError, match="8-bit"):
        encode("x", ref=256)


def test_payloads_decode_in_each_coding() -> None:
    assert decode_payload("你好".encode("utf-16-be"), 8) == "你好"
    assert decode_payload("你好".encode("gbk"), 15) == "你好"
    assert decode_payload(b"Hi @all", 1) == "Hi @all"
    assert decode_payload("café".encode("latin-1"), 3) == "café"
    assert decode_payload(b"\x00\x01\x02\x1b\x65", 0) == "@£$€"
    assert decode_payload(b"\x00", 0xF0) == "@"  # message-class group, GSM alphabet


def test_gsm_escapes_the_receiver_does_not_know_show_the_default_character() -> None:
    assert decode_payload(b"\x1b\x41", 0) == "A"
    assert decode_payload(b"ab\x1b", 0) == "ab "


def test_bad_payload_bytes_are_refused_or_replaced_never_dropped() -> None:
    with pytest.raises(ValueError, match="data_coding 0"):
        decode_payload(b"ab\x80", 0)
    assert decode_payload(b"ab\x80c", 0, errors="replace") == "ab\ufffdc"
    with pytest.raises(ValueError, match="data_coding 8"):
        decode_payload(b"\x4f\x60\x59", 8)
    assert decode_payload(b"\x4f\x60\x59", 8, errors="replace") == "你\ufffd"
    with pytest.raises(ValueError, match="data_coding 4"):
        decode_payload(b"\x01", 4)
    with pytest.raises(ValueError, match="data_coding 1"):
        decode_payload(b"\xff", 1)


def test_udh_with_an_8_bit_and_a_16_bit_reference() -> None:
    assert parse_udh(b"\x05\x00\x03\x2a\x03\x02body") == (Udh(0x2A, 3, 2, 8), b"body")
    assert parse_udh(b"\x06\x08\x04\x12\x34\x03\x01body") == (Udh(0x1234, 3, 1, 16), b"body")


def test_the_concatenation_element_is_found_after_other_elements() -> None:
    ports = b"\x05\x04\x0b\x84\x23\xf0"  # application port addressing, 16-bit
    header = ports + b"\x08\x04\x01\x00\x02\x02"
    assert parse_udh(bytes([len(header)]) + header + b"x") == (Udh(0x0100, 2, 2, 16), b"x")


@given(
    before=st.lists(st.tuples(st.integers(1, 7), st.binary(max_size=6)), max_size=4),
    after=st.lists(st.tuples(st.integers(0x0A, 0x7F), st.binary(max_size=6)), max_size=4),
    sixteen=st.booleans(),
    ref=st.integers(0, 0xFFFF),
    total=st.integers(1, 255),
    data=st.data(),
)
def test_concatenation_found_among_any_elements(
    before: list[tuple[int, bytes]],
    after: list[tuple[int, bytes]],
    sixteen: bool,
    ref: int,
    total: int,
    data: st.DataObject,
) -> None:
    seq = data.draw(st.integers(1, total))
    ref = ref if sixteen else ref & 0xFF
    concat = bytes([8, 4]) + ref.to_bytes(2, "big") + bytes([total, seq]) if sixteen else bytes([0, 3, ref, total, seq])
    elements = [bytes([iei, len(value)]) + value for iei, value in before if iei != 8]
    elements += [concat] + [bytes([iei, len(value)]) + value for iei, value in after]
    header = b"".join(elements)
    assert parse_udh(bytes([len(header)]) + header + b"body") == (Udh(ref, total, seq, 16 if sixteen else 8), b"body")


def test_a_udh_without_concatenation_gives_the_body() -> None:
    assert parse_udh(b"\x04\x05\x02\x0b\x84hello") == (None, b"hello")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (b"\x09\x00\x03\x01\x02\x01", "says 9 bytes"),
        (b"\x03\x00\x03\x01", "says 3 bytes but the header ends"),
        (b"\x01\x00", "cut short"),
        (b"\x04\x00\x02\x01\x02", "has 3 bytes, not 2"),
        (b"\x05\x08\x03\x01\x02\x01", "has 4 bytes, not 3"),
        (b"\x05\x00\x03\x01\x02\x00", "part 0 of"),
        (b"\x05\x00\x03\x01\x02\x03", "part 3 of a message of 2"),
        (b"\x05\x00\x03\x01\x00\x00", "0 parts"),
    ],
)
def test_a_malformed_udh_is_a_clear_error(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_udh(data)


def key(ref: int = 1, total: int = 3, source: str = "13800138000") -> PartKey:
    return PartKey(source, "12345", ref, total)


def test_16_bit_references_with_the_same_low_byte_are_two_messages() -> None:
    reassembler: Reassembler[str] = Reassembler()
    assert reassembler.add(key(0x0134, 2), 1, "a1", 0) is None
    assert reassembler.add(key(0x0234, 2), 2, "b2", 0) is None
    assert reassembler.add(key(0x0134, 2), 2, "a2", 0) == Complete(key(0x0134, 2), ("a1", "a2"))
    assert reassembler.add(key(0x0234, 2), 1, "b1", 0) == Complete(key(0x0234, 2), ("b1", "b2"))


def test_a_single_part_is_complete_at_once_and_kept_nowhere() -> None:
    reassembler: Reassembler[str] = Reassembler(max_pending=1)
    reassembler.add(key(9), 1, "x", 0)
    assert reassembler.add(key(1, 1), 1, "whole", 0) == Complete(key(1, 1), ("whole",))
    assert len(reassembler) == 1


def test_a_redelivered_part_replaces_the_earlier_copy() -> None:
    reassembler: Reassembler[str] = Reassembler()
    reassembler.add(key(), 2, "first copy", 0)
    assert reassembler.part(key(), 2) == "first copy"
    assert reassembler.part(key(), 1) is None
    assert reassembler.add(key(), 2, "second copy", 1) is None
    reassembler.add(key(), 1, "p1", 1)
    assert reassembler.add(key(), 3, "p3", 1) == Complete(key(), ("p1", "second copy", "p3"))


def test_a_full_reassembler_refuses_clearly_and_never_grows() -> None:
    reassembler: Reassembler[str] = Reassembler(max_pending=2)
    reassembler.add(key(1), 1, "a", 0)
    reassembler.add(key(2), 1, "b", 0)
    with pytest.raises(ReassemblyFull, match="2 long messages are waiting"):
        reassembler.add(key(3), 1, "c", 0)
    assert len(reassembler) == 2
    assert reassembler.part(key(3), 1) is None
    reassembler.add(key(1), 2, "a2", 0)  # a part of a message already waiting is still taken
    assert reassembler.add(key(1), 3, "a3", 0) == Complete(key(1), ("a", "a2", "a3"))
    reassembler.add(key(3), 1, "c", 0)  # room again
    assert len(reassembler) == 2


@given(st.lists(st.tuples(st.integers(0, 20), st.integers(1, 4), st.integers(1, 4)), max_size=200))
def test_the_reassembler_never_holds_more_than_its_bound(adds: list[tuple[int, int, int]]) -> None:
    reassembler: Reassembler[int] = Reassembler(max_pending=5, max_parts=4)
    for ref, total, seq in adds:
        try:
            reassembler.add(key(ref, total), seq, seq, 0)
        except ReassemblyFull:
            pass
        except ValueError:
            assert seq > total
        assert len(reassembler) <= 5


def test_impossible_part_numbers_are_refused() -> None:
    reassembler: Reassembler[str] = Reassembler(max_parts=10)
    with pytest.raises(ValueError, match="part 4 of a message of 3"):
        reassembler.add(key(), 4, "x", 0)
    with pytest.raises(ValueError, match="part 0"):
        reassembler.add(key(), 0, "x", 0)
    with pytest.raises(ValueError, match="at most 10"):
        reassembler.add(key(total=11), 1, "x", 0)
    assert len(reassembler) == 0


def test_expiry_delivers_what_arrived_marked_with_the_missing_parts() -> None:
    reassembler: Reassembler[str] = Reassembler(timeout=10)
    reassembler.add(key(1, 4), 3, "c", 100)
    reassembler.add(key(2, 2), 2, "y", 105)
    reassembler.add(key(1, 4), 1, "a", 108)
    assert reassembler.next_deadline() == 110
    assert reassembler.expire(109.9) == []
    assert reassembler.expire(110) == [Incomplete(key(1, 4), ("a", "c"), (1, 3), (2, 4))]
    assert reassembler.next_deadline() == 115
    assert reassembler.expire(200) == [Incomplete(key(2, 2), ("y",), (2,), (1,))]
    assert reassembler.next_deadline() is None and len(reassembler) == 0


def test_a_part_after_its_message_expired_starts_over() -> None:
    reassembler: Reassembler[str] = Reassembler(timeout=1)
    reassembler.add(key(1, 2), 1, "a", 0)
    assert len(reassembler.expire(5)) == 1
    reassembler.add(key(1, 2), 2, "b", 6)
    assert reassembler.expire(7) == [Incomplete(key(1, 2), ("b",), (2,), (1,))]


def test_reassembler_bounds_are_checked() -> None:
    with pytest.raises(ValueError):
        Reassembler(timeout=0)
    with pytest.raises(ValueError):
        Reassembler(max_pending=0)
    with pytest.raises(ValueError):
        Reassembler(max_parts=256)


RECEIPT_FIELDS = {
    "id": "id:0123456789",
    "sub": "sub:001",
    "dlvrd": "dlvrd:001",
    "submit": "submit date:2401311405",
    "done": "done date:240131140759",
    "stat": "stat:DELIVRD",
    "err": "err:000",
}


def test_a_receipt_with_a_10_digit_and_a_12_digit_date() -> None:
    text = " ".join(RECEIPT_FIELDS.values()) + " text:你好"
    receipt = parse_receipt(text)
    assert (receipt.message_id, receipt.state, receipt.error) == ("0123456789", "delivered", "000")
    assert receipt.done_at == datetime(2024, 1, 31, 14, 7, 59)
    assert parse_receipt("id:7 done date:2401311407 stat:UNDELIV err:012").done_at == datetime(2024, 1, 31, 14, 7)


@given(st.permutations(list(RECEIPT_FIELDS.values())))
def test_receipt_fields_in_any_order(fields: list[str]) -> None:
    receipt = parse_receipt(" ".join(fields))
    assert (receipt.message_id, receipt.state, receipt.error) == ("0123456789", "delivered", "000")
    assert receipt.done_at == datetime(2024, 1, 31, 14, 7, 59)


def test_the_text_field_may_quote_anything() -> None:
    receipt = parse_receipt("id:abc stat:UNDELIV err:001 text:stat:DELIVRD id:zzz")
    assert (receipt.message_id, receipt.state) == ("abc", "failed")
    # text before stat: its value ends at the next field
    assert parse_receipt("text:hello id:x1 stat:EXPIRED").state == "expired"


@pytest.mark.parametrize(
    ("stat", "state"),
    [
        ("DELIVRD", "delivered"),
        ("UNDELIV", "failed"),
        ("DELETED", "failed"),
        ("EXPIRED", "expired"),
        ("REJECTD", "rejected"),
        ("ACCEPTD", "unknown"),
        ("UNKNOWN", "unknown"),
        ("MA:0001", "unknown"),
        ("delivrd", "delivered"),
    ],
)
def test_stat_words_map_to_states(stat: str, state: str) -> None:
    assert receipt_state(stat) == state


def test_what_is_not_a_receipt_is_refused_and_odd_dates_are_none() -> None:
    with pytest.raises(ValueError, match="no id or no stat"):
        parse_receipt("hello, I need help with my street light")
    with pytest.raises(ValueError, match="no id or no stat"):
        parse_receipt("id:1 err:000")
    with pytest.raises(ValueError, match="at most 1024"):
        parse_receipt("id:1 stat:DELIVRD text:" + "x" * 1024)
    assert parse_receipt("id:1 stat:DELIVRD done date:2413011200").done_at is None
    assert parse_receipt("id:1 stat:DELIVRD done date:24011312").done_at is None


def test_parts_are_joined_before_decoding_unless_there_is_a_gap() -> None:
    pair = "😀".encode("utf-16-be")
    cut = [(8, "你".encode("utf-16-be") + pair[:2]), (8, pair[2:])]  # a sender that split the pair
    assert decode_parts(cut) == "你😀"
    assert decode_parts(cut, contiguous=False) == "你\ufffd\ufffd"  # across a gap: each alone, nothing dropped
    assert decode_parts([(0, b"Hi "), (8, "你".encode("utf-16-be"))]) == "Hi 你"  # codings differ: each alone


def test_text_codings_and_binary_ones() -> None:
    assert all(is_text_coding(coding) for coding in (0, 1, 3, 8, 15, 0xF1))
    assert not any(is_text_coding(coding) for coding in (2, 4, 0xF4, 0x18))
