"""SIP requests PJSIP's parser accepts but RFC 3261 refuses: the worker answers them 400 itself.

Pure: a request's bytes in, a verdict out. The C module calls `check_request` for every request
before PJSIP's transaction layer sees it (`_pjnative.sip_guard_start`, see docs/voice.md, "Malformed
requests"), so a refused request never becomes a transaction, a call or an OPTIONS answer.

What PJSIP 2.15.1 lets through (RFC 4475 torture tests sent to a worker, each answered 200):
- `clerr` (3.1.2.7): a Content-Length larger than the body the datagram carries. RFC 3261 18.3: "If
  the transport packet ends before the end of the message body, this is considered an error. [...]
  If the message is a request, the element SHOULD generate a 400 (Bad Request) response."
- `mismatch01` (3.1.2.16): a CSeq method that is not the request line's. RFC 3261 8.1.1.5: the CSeq
  method MUST match the request's; RFC 4475: "any element receiving this request will respond with a
  400 Bad Request".

The worker listens on UDP only, so every request is one datagram and its body is the rest of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

BAD_REQUEST = 400

_HEAD_END = re.compile(rb"\r?\n\r?\n")
_CONTENT_LENGTH = ("content-length", "l")  # and its compact form (RFC 3261 7.3.3)


@dataclass(frozen=True, slots=True)
class Refusal:
    """The answer to a request that goes no further (an ACK is never answered, only dropped)."""

    status: int
    reason: str


CL_PAST_DATAGRAM = Refusal(BAD_REQUEST, "Bad Request (Content-Length past the end of the datagram)")
CSEQ_MISMATCH = Refusal(BAD_REQUEST, "Bad Request (CSeq method is not the request method)")


@dataclass(frozen=True, slots=True)
class Head:
    method: str
    headers: tuple[tuple[str, str], ...]  # (lower-case name, value), in order, folded lines joined
    body_bytes: int

    def values(self, *names: str) -> list[str]:
        return [value for name, value in self.headers if name in names]


def parse_head(message: bytes) -> Head:
    """The request line's method, the header fields and the body's length (the rest of the datagram)."""
    message = message.lstrip(b"\r\n")  # CRLFs before the start line are ignored (RFC 3261 7.5)
    end = _HEAD_END.search(message)
    head, body_bytes = (message[: end.start()], len(message) - end.end()) if end else (message, 0)
    lines = head.decode("latin-1").splitlines()
    method = lines[0].split(" ", 1)[0] if lines else ""
    headers: list[tuple[str, str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:  # a folded continuation line (RFC 3261 7.3.1)
            name, value = headers[-1]
            headers[-1] = (name, f"{value} {line.strip()}")
            continue
        name, colon, value = line.partition(":")
        if colon:
            headers.append((name.strip().lower(), value.strip()))
    return Head(method, tuple(headers), body_bytes)


def check_request(message: bytes) -> Refusal | None:
    """None when PJSIP may have the request; otherwise how to refuse it."""
    head = parse_head(message)
    for value in head.values("cseq"):
        parts = value.split()
        if len(parts) == 2 and parts[1] != head.method:  # methods are case-sensitive
            return CSEQ_MISMATCH
    for value in head.values(*_CONTENT_LENGTH):
        if value.isdigit() and int(value) > head.body_bytes:
            return CL_PAST_DATAGRAM
    return None  # anything else malformed is PJSIP's parser's to refuse (it answers 400 itself)


def verdict(message: bytes) -> tuple[int, str] | None:
    """`check_request` as the C module reads it: None, or (status, reason phrase)."""
    refusal = check_request(message)
    return None if refusal is None else (refusal.status, refusal.reason)


def probe_request(host: str, port: int, token: str) -> bytes:
    """The request a worker sends itself so the C module can find where PJSIP keeps a request's bytes
    (an OPTIONS nobody answers: the module takes it; `token` makes it unmistakable)."""
    return (
        f"OPTIONS sip:guard-probe@{host}:{port} SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:9;branch=z9hG4bK-hg-{token}\r\n"
        "Max-Forwards: 0\r\n"
        f"From: <sip:guard-probe@invalid>;tag={token}\r\n"
        "To: <sip:guard-probe@invalid>\r\n"
        f"Call-ID: {token}@guard-probe\r\n"
        "CSeq: 1 OPTIONS\r\n"
        "Content-Length: 0\r\n\r\n"
    ).encode("ascii")
