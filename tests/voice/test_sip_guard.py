"""The SIP guard's check, pure: RFC 4475's malformed requests are refused, well-formed ones pass."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.voice.sip_guard import (
    CL_PAST_DATAGRAM,
    CSEQ_MISMATCH,
    Refusal,
    check_request,
    parse_head,
    probe_request,
    verdict,
)
from tests.voice.rfc4475 import CLERR, MISMATCH01, MISMATCH02

VIA = "127.0.0.1:5099"

SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n"


def request(method: str = "INVITE", cseq: str | None = None, body: str = SDP, length: int | None = None) -> bytes:
    length = len(body) if length is None else length
    return (
        f"{method} sip:12345@127.0.0.1 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {VIA};branch=z9hG4bK-1\r\n"
        "From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:12345@127.0.0.1>\r\nCall-ID: c1\r\n"
        f"CSeq: 1 {cseq or method}\r\nContent-Length: {length}\r\n\r\n{body}"
    ).encode()


@pytest.mark.parametrize(
    ("message", "refusal"),
    [(CLERR, CL_PAST_DATAGRAM), (MISMATCH01, CSEQ_MISMATCH), (MISMATCH02, CSEQ_MISMATCH)],
    ids=["clerr", "mismatch01", "mismatch02"],
)
def test_rfc4475_requests_that_must_get_400(message: str, refusal: Refusal) -> None:
    assert check_request(message.format(via=VIA).encode()) == refusal
    assert verdict(message.format(via=VIA).encode()) == (400, refusal.reason)


@pytest.mark.parametrize("method", ["INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "INFO", "UPDATE", "NEWMETHOD"])
def test_well_formed_requests_pass(method: str) -> None:
    assert check_request(request(method)) is None
    assert check_request(request(method, body="")) is None
    assert verdict(request(method)) is None


def test_a_content_length_short_of_the_body_is_left_to_pjsip() -> None:
    # RFC 3261 18.3: bytes beyond Content-Length are discarded, not an error.
    assert check_request(request(length=10)) is None


def test_one_byte_past_the_datagram_is_refused() -> None:
    assert check_request(request(length=len(SDP) + 1)) == CL_PAST_DATAGRAM


def test_methods_are_case_sensitive() -> None:
    assert check_request(request("INVITE", cseq="invite")) == CSEQ_MISMATCH


def test_folded_headers_compact_forms_and_loose_whitespace_are_read_as_sip_allows() -> None:
    # In the manner of RFC 4475 wsinv: a CSeq folded over two lines, space before a colon, `l:`.
    message = (
        "\r\nINVITE sip:12345@127.0.0.1 SIP/2.0\r\n"
        f"Via  : SIP/2.0/UDP {VIA};branch=z9hG4bK-2\r\n"
        "cseq: 0009\r\n  INVITE\r\n"
        "Call-ID: c2\r\n"
        f"l:{len(SDP)}\r\n\r\n{SDP}"
    ).encode()
    head = parse_head(message)
    assert head.method == "INVITE" and head.values("cseq") == ["0009 INVITE"]
    assert head.values("content-length", "l") == [str(len(SDP))] and head.body_bytes == len(SDP)
    assert check_request(message) is None
    assert check_request(message.replace(b"  INVITE", b"  BYE")) == CSEQ_MISMATCH


def test_bare_line_feeds_split_the_head_from_the_body_too() -> None:
    body = SDP.replace("\r\n", "\n")
    message = request(body=body).replace(b"\r\n", b"\n")
    assert parse_head(message).body_bytes == len(body)
    assert check_request(message) is None
    assert check_request(request(body=body, length=len(body) + 1).replace(b"\r\n", b"\n")) == CL_PAST_DATAGRAM


def test_garbage_is_left_to_pjsips_parser() -> None:
    for junk in (b"", b"\r\n\r\n", b"\x00\xff" * 40, b"INVITE\r\nCSeq\r\n\r\n"):
        assert check_request(junk) is None


def test_the_probe_is_a_request_the_check_lets_through() -> None:
    probe = probe_request("127.0.0.1", 5070, "abc123")
    assert check_request(probe) is None and b"abc123" in probe


@given(
    method=st.sampled_from(["INVITE", "OPTIONS", "BYE", "REGISTER"]),
    other=st.sampled_from(["INVITE", "OPTIONS", "BYE", "REGISTER", "ACK", "FOO"]),
    body=st.text(alphabet="abc=\r\n 0123", max_size=200),
    extra=st.integers(min_value=-50, max_value=50),
)
def test_any_request_is_refused_exactly_when_its_cseq_or_its_length_is_wrong(
    method: str, other: str, body: str, extra: int
) -> None:
    length = max(0, len(body.encode()) + extra)
    message = request(method, cseq=other, body=body, length=length)
    expected = CSEQ_MISMATCH if other != method else CL_PAST_DATAGRAM if length > len(body.encode()) else None
    assert check_request(message) == expected
