"""The SMS text core, shared by SMPP and CMPP: pure functions and one pure state machine, no I/O.

- `encode(text, ref)` chooses the alphabet (GSM 03.38 when every character has a septet, else
  UCS-2 as UTF-16-BE) and splits a long text into parts with a concatenation UDH, never splitting a
  GSM escape pair or a UTF-16 surrogate pair across two parts.
- `decode_payload(payload, data_coding)` reads a part's bytes back into text.
- `parse_udh(data)` finds the concatenation element (8- or 16-bit reference) wherever it stands
  among the UDH's elements and returns the body after the header.
- `Reassembler` joins the parts of long messages (bounded; time is an argument, never read) and
  hands over, after its timeout, what arrived of a message whose parts did not all come.
- `HandedOver` remembers the parts of the latest long messages handed over (`part_digest` each),
  so a part the peer delivers again after its message was taken is known at once (bounded).
- `parse_receipt(text)` reads a delivery receipt's text (SMPP 3.4 Appendix B), fields in any order.

Numbers used by SMPP's `data_coding` and CMPP's `Msg_Fmt`: 0 GSM default alphabet (SMPP; CMPP's
Msg_Fmt 0 means ASCII, which its codec passes here as 1), 1 IA5/ASCII, 3 Latin-1, 8 UCS-2, 15 GBK.
"""

from __future__ import annotations

import hashlib
import re
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Literal, TypeVar

GSM = 0
ASCII = 1
LATIN1 = 3
UCS2 = 8
GBK = 15

IEI_CONCAT_8 = 0x00
IEI_CONCAT_16 = 0x08

GSM_SINGLE_SEPTETS = 160
GSM_PART_SEPTETS = 153  # 160 less the 6-byte UDH (7 septets once padded)
UCS2_SINGLE_UNITS = 70
UCS2_PART_UNITS = 67  # 140 bytes less the 6-byte UDH, in 16-bit code units
MAX_PARTS = 255  # the concatenation element counts parts in one byte

# GSM 03.38 default alphabet, septet value = index.
GSM_DEFAULT = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
ESCAPE = 0x1B
# The extension table: these characters cost two septets, ESC then the value.
GSM_EXTENSION = {
    "\f": 0x0A, "^": 0x14, "{": 0x28, "}": 0x29, "\\": 0x2F, "[": 0x3C, "~": 0x3D, "]": 0x3E, "|": 0x40, "€": 0x65,
}  # fmt: skip
_GSM_ENCODE = {char: value for value, char in enumerate(GSM_DEFAULT) if value != ESCAPE}
_GSM_EXTENSION_DECODE = {value: char for char, value in GSM_EXTENSION.items()}


@dataclass(frozen=True, slots=True)
class Part:
    """One short message as it goes on the wire: `udh` (empty for a single part) then `payload`."""

    data_coding: int
    udh: bytes
    payload: bytes
    ref: int
    total: int
    seq: int

    @property
    def short_message(self) -> bytes:
        return self.udh + self.payload


def is_gsm(text: str) -> bool:
    """Every character has a septet in the default alphabet or its extension table."""
    return all(char in _GSM_ENCODE or char in GSM_EXTENSION for char in text)


def encode(text: str, ref: int, *, allow_gsm: bool = True) -> list[Part]:
    """The parts that carry `text`: GSM 03.38 when it fits the alphabet (and `allow_gsm`), else UCS-2.

    `ref` (0-255) is the concatenation reference of a long message; the caller keeps it varying.
    Raises ValueError for a text UTF-16 cannot carry (a lone surrogate) or longer than 255 parts.
    """
    if not 0 <= ref <= 0xFF:
        raise ValueError(f"a concatenation reference is 8-bit here, not {ref}")
    if allow_gsm and is_gsm(text):
        units = [_gsm_septets(char) for char in text]
        single, per_part, coding = GSM_SINGLE_SEPTETS, GSM_PART_SEPTETS, GSM
    else:
        units = [_utf16(char) for char in text]
        single, per_part, coding = UCS2_SINGLE_UNITS * 2, UCS2_PART_UNITS * 2, UCS2  # in bytes
    chunks = _split(units, single, per_part)
    if len(chunks) > MAX_PARTS:
        raise ValueError(f"a text of {len(text)} characters needs {len(chunks)} parts; at most {MAX_PARTS}")
    if len(chunks) == 1:
        return [Part(coding, b"", chunks[0], ref, 1, 1)]
    total = len(chunks)
    return [
        Part(coding, bytes([5, IEI_CONCAT_8, 3, ref, total, seq]), chunk, ref, total, seq)
        for seq, chunk in enumerate(chunks, start=1)
    ]


def _gsm_septets(char: str) -> bytes:
    if char in GSM_EXTENSION:
        return bytes([ESCAPE, GSM_EXTENSION[char]])
    return bytes([_GSM_ENCODE[char]])


def _utf16(char: str) -> bytes:
    try:
        return char.encode("utf-16-be")  # an astral character: a surrogate pair, kept together
    except UnicodeEncodeError:
        raise ValueError(f"the text holds a lone surrogate (U+{ord(char):04X}) that no SMS can carry") from None


def _split(units: list[bytes], single: int, per_part: int) -> list[bytes]:
    """Whole characters into chunks: one of at most `single` bytes, else chunks of `per_part`."""
    if sum(len(unit) for unit in units) <= single:
        return [b"".join(units)]
    chunks: list[bytes] = []
    current = bytearray()
    for unit in units:
        if len(current) + len(unit) > per_part:
            chunks.append(bytes(current))
            current = bytearray()
        current += unit
    chunks.append(bytes(current))
    return chunks


def decode_payload(payload: bytes, data_coding: int, errors: Literal["strict", "replace"] = "strict") -> str:
    """A part's bytes as text. `errors="replace"` puts U+FFFD where bytes do not decode (an inbound
    message is never dropped for one bad byte); "strict" raises ValueError naming the coding."""
    coding = _text_coding(data_coding)
    try:
        if coding == GSM:
            return _decode_gsm(payload, errors)
        if coding == UCS2:
            return payload.decode("utf-16-be", errors)
        codec = {ASCII: "ascii", LATIN1: "latin-1", GBK: "gbk"}[coding]
        return payload.decode(codec, errors)
    except UnicodeDecodeError as error:
        raise ValueError(f"a payload that is not valid for data_coding {data_coding}: {error.reason}") from None


def decode_parts(parts: Sequence[tuple[int, bytes]], *, contiguous: bool = True) -> str:
    """The text of a message's parts, each (data_coding, body), in part order; what does not decode
    becomes U+FFFD (nothing is dropped). Parts that follow each other (`contiguous`) and share a
    coding are joined before decoding: a sender may cut a surrogate or a GBK pair between parts;
    across a gap (an incomplete message), each part is decoded alone."""
    codings = {coding for coding, _ in parts}
    if contiguous and len(codings) == 1:
        return decode_payload(b"".join(body for _, body in parts), codings.pop(), errors="replace")
    return "".join(decode_payload(body, coding, errors="replace") for coding, body in parts)


def is_text_coding(data_coding: int) -> bool:
    """`decode_payload` reads this data_coding (binary ones, 4 and 0xF4.., are not text)."""
    try:
        _text_coding(data_coding)
    except ValueError:
        return False
    return True


def _text_coding(data_coding: int) -> int:
    if data_coding in (GSM, ASCII, LATIN1, UCS2, GBK):
        return data_coding
    # The "message class" group (0xF0-0xFF): bit 2 clear is the GSM default alphabet.
    if data_coding & 0xF0 == 0xF0 and not data_coding & 0x04:
        return GSM
    raise ValueError(f"data_coding {data_coding} is not a text coding this gateway reads")


def _decode_gsm(payload: bytes, errors: str) -> str:
    chars: list[str] = []
    escaped = False
    for position, septet in enumerate(payload):
        if septet > 0x7F:
            if errors == "strict":
                raise UnicodeDecodeError("gsm0338", payload, position, position + 1, "a byte above 0x7F")
            chars.append("\ufffd")
            escaped = False
        elif escaped:
            # 03.38: an escape the receiver does not know shows the default character instead.
            chars.append(_GSM_EXTENSION_DECODE.get(septet, GSM_DEFAULT[septet]))
            escaped = False
        elif septet == ESCAPE:
            escaped = True
        else:
            chars.append(GSM_DEFAULT[septet])
    if escaped:
        chars.append(" ")  # a trailing escape: 03.38 shows a space
    return "".join(chars)


@dataclass(frozen=True, slots=True)
class Udh:
    """The concatenation element of a user data header: part `seq` of `total`, reference `ref`."""

    ref: int
    total: int
    seq: int
    ref_bits: int  # 8 (IEI 0x00) or 16 (IEI 0x08)


def parse_udh(data: bytes) -> tuple[Udh | None, bytes]:
    """Split a short message that has a UDH (UDHI set) into its concatenation element, if any, and
    the body. Elements may come in any order; a repeated concatenation element: the last counts
    (3GPP 23.040 9.2.3.24). Raises ValueError naming what is malformed."""
    if not data:
        raise ValueError("a UDH was announced but the message is empty")
    length = data[0]
    if length + 1 > len(data):
        raise ValueError(f"the UDH says {length} bytes but only {len(data) - 1} follow")
    header, body = data[1 : length + 1], data[length + 1 :]
    found: Udh | None = None
    position = 0
    while position < len(header):
        if position + 2 > len(header):
            raise ValueError("a UDH element is cut short before its length")
        iei, size = header[position], header[position + 1]
        value = header[position + 2 : position + 2 + size]
        if len(value) != size:
            raise ValueError(f"UDH element 0x{iei:02x} says {size} bytes but the header ends first")
        if iei in (IEI_CONCAT_8, IEI_CONCAT_16):
            found = _concatenation(iei, value)
        position += 2 + size
    return found, body


def _concatenation(iei: int, value: bytes) -> Udh:
    expected = 3 if iei == IEI_CONCAT_8 else 4
    if len(value) != expected:
        raise ValueError(f"a concatenation element 0x{iei:02x} has {expected} bytes, not {len(value)}")
    ref = value[0] if iei == IEI_CONCAT_8 else int.from_bytes(value[:2], "big")
    total, seq = value[-2], value[-1]
    _check_part_numbers(total, seq)
    return Udh(ref, total, seq, 8 if iei == IEI_CONCAT_8 else 16)


def _check_part_numbers(total: int, seq: int) -> None:
    if total < 1:
        raise ValueError("a concatenated message of 0 parts")
    if not 1 <= seq <= total:
        raise ValueError(f"part {seq} of a message of {total} parts")


# --- Reassembly -------------------------------------------------------------------------------

F = TypeVar("F")  # what a part carries: text, bytes, or whatever the session keeps per part


@dataclass(frozen=True, slots=True)
class PartKey:
    """Parts belong together when source, destination, reference and part count agree."""

    source: str
    dest: str
    ref: int
    total: int


@dataclass(frozen=True, slots=True)
class Complete(Generic[F]):
    key: PartKey
    parts: tuple[F, ...]  # in part order


@dataclass(frozen=True, slots=True)
class Incomplete(Generic[F]):
    """What arrived of a message whose other parts did not come within the timeout."""

    key: PartKey
    parts: tuple[F, ...]  # the parts that came, in part order
    present: tuple[int, ...]  # their part numbers
    missing: tuple[int, ...]


class ReassemblyFull(ValueError):
    """The reassembler holds its maximum of messages: the new part is refused (nothing is dropped;
    the session answers with a transient error so the peer sends it again later)."""


@dataclass(slots=True)
class _Pending(Generic[F]):
    first_at: float
    parts: dict[int, F] = field(default_factory=dict)


class Reassembler(Generic[F]):
    """Joins the parts of long messages. Pure: time is passed in, nothing is read or written.

    Bounded: at most `max_pending` messages waiting for parts (a part of a new message beyond that
    raises ReassemblyFull), each of at most `max_parts` parts. A part received twice (a peer's
    redelivery) replaces the earlier copy (`part` shows it beforehand, so the caller can answer it).
    """

    def __init__(self, *, timeout: float = 10.0, max_pending: int = 1_000, max_parts: int = MAX_PARTS) -> None:
        if timeout <= 0 or max_pending < 1 or not 1 <= max_parts <= 0xFF:
            raise ValueError("a reassembler needs a positive timeout, max_pending >= 1 and max_parts 1-255")
        self.timeout = timeout
        self.max_pending = max_pending
        self.max_parts = max_parts
        self._pending: OrderedDict[PartKey, _Pending[F]] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._pending)

    def add(self, key: PartKey, seq: int, fragment: F, now: float) -> Complete[F] | None:
        """Take part `seq` of `key.total`; the whole message once its last part is here.

        Raises ValueError for impossible part numbers, ReassemblyFull when full (the state is then
        unchanged)."""
        _check_part_numbers(key.total, seq)
        if key.total > self.max_parts:
            raise ValueError(f"a message of {key.total} parts; at most {self.max_parts} are joined")
        if key.total == 1:
            return Complete(key, (fragment,))
        pending = self._pending.get(key)
        if pending is None:
            if len(self._pending) >= self.max_pending:
                raise ReassemblyFull(f"{self.max_pending} long messages are waiting for parts; part refused")
            pending = self._pending[key] = _Pending(first_at=now)
        pending.parts[seq] = fragment
        if len(pending.parts) < key.total:
            return None
        del self._pending[key]
        return Complete(key, tuple(pending.parts[number] for number in range(1, key.total + 1)))

    def part(self, key: PartKey, seq: int) -> F | None:
        """The copy of a part already held (a redelivered part replaces it in `add`)."""
        pending = self._pending.get(key)
        return None if pending is None else pending.parts.get(seq)

    def next_deadline(self) -> float | None:
        """When the oldest waiting message times out (for the caller's timer), or None."""
        for pending in self._pending.values():
            return pending.first_at + self.timeout
        return None

    def expire(self, now: float) -> list[Incomplete[F]]:
        """The messages whose first part came `timeout` ago or more, as they are, oldest first."""
        expired: list[Incomplete[F]] = []
        while self._pending:
            key, pending = next(iter(self._pending.items()))
            if now - pending.first_at < self.timeout:
                break
            del self._pending[key]
            present = tuple(sorted(pending.parts))
            missing = tuple(number for number in range(1, key.total + 1) if number not in pending.parts)
            expired.append(Incomplete(key, tuple(pending.parts[number] for number in present), present, missing))
        return expired


def part_digest(coding: int, body: bytes) -> str:
    """What a part of a long message held (its coding and bytes, the UDH left out): a redelivered
    part has the same, a part of another message with the same reference almost never."""
    return hashlib.sha256(bytes([coding & 0xFF]) + body).hexdigest()[:16]


class HandedOver:
    """The long messages handed over lately, each part as its `part_digest`: a part the peer
    delivers again after its message was taken (the answer to it was lost) is known at once.
    Pure; bounded: the `limit` latest messages (the oldest forgotten)."""

    def __init__(self, limit: int) -> None:
        if limit < 1:
            raise ValueError("remember at least one message")
        self._limit = limit
        self._messages: OrderedDict[PartKey, dict[int, str]] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._messages)

    def add(self, key: PartKey, parts: Iterable[tuple[int, str]]) -> None:
        """The message `key`'s parts (number, digest) were handed over and taken."""
        held = self._messages.pop(key, {})
        held.update(parts)
        self._messages[key] = held
        while len(self._messages) > self._limit:
            self._messages.popitem(last=False)

    def holds(self, key: PartKey, seq: int, digest: str) -> bool:
        """Whether this part, as it is, belongs to a message handed over."""
        held = self._messages.get(key)
        return held is not None and held.get(seq) == digest


# --- Delivery receipts ------------------------------------------------------------------------

ReceiptState = Literal["delivered", "failed", "expired", "rejected", "unknown"]

# SMPP 3.4 Appendix B's stat words. ACCEPTD (read by customer service on the subscriber's behalf)
# and ENROUTE say nothing about the handset: unknown.
RECEIPT_STATES: dict[str, ReceiptState] = {
    "DELIVRD": "delivered",
    "UNDELIV": "failed",
    "DELETED": "failed",
    "EXPIRED": "expired",
    "REJECTD": "rejected",
    "ACCEPTD": "unknown",
    "UNKNOWN": "unknown",
    "ENROUTE": "unknown",
}


@dataclass(frozen=True, slots=True)
class Receipt:
    message_id: str  # the id the peer gave the part it reports on
    state: ReceiptState
    error: str  # the peer's error code as it wrote it ("000" when none)
    done_at: datetime | None  # the peer's local time; None when absent or unreadable


_RECEIPT_KEY = re.compile(r"(?:^|(?<=\s))(id|sub|dlvrd|submit date|done date|stat|err|text):", re.IGNORECASE)
MAX_RECEIPT_TEXT = 1024


def receipt_state(stat: str) -> ReceiptState:
    """The state a peer's stat word means (DELIVRD, UNDELIV, ...); a word not known is unknown."""
    return RECEIPT_STATES.get(stat.strip().upper(), "unknown")


def parse_receipt(text: str) -> Receipt:
    """Read "id:... sub:... dlvrd:... submit date:... done date:... stat:... err:... text:...".

    Fields in any order; dates of 10 (YYMMDDhhmm) or 12 (with seconds) digits. The free `text:`
    field runs to the end once id and stat are known (it may quote anything). Raises ValueError
    when the text is not a receipt (no id or no stat)."""
    if len(text) > MAX_RECEIPT_TEXT:
        raise ValueError(f"a receipt of {len(text)} characters; at most {MAX_RECEIPT_TEXT}")
    fields: dict[str, str] = {}
    matches = list(_RECEIPT_KEY.finditer(text))
    for index, match in enumerate(matches):
        name = match[1].lower()
        if name == "text" and "id" in fields and "stat" in fields:
            break
        end = matches[index + 1].start() if index + 1 < len(matches) else len(text)
        fields.setdefault(name, text[match.end() : end].strip())
    if not fields.get("id") or not fields.get("stat"):
        raise ValueError("not a delivery receipt: no id or no stat field")
    return Receipt(
        message_id=fields["id"],
        state=receipt_state(fields["stat"]),
        error=fields.get("err", ""),
        done_at=parse_receipt_date(fields.get("done date", "")),
    )


def parse_receipt_date(value: str) -> datetime | None:
    """YYMMDDhhmm or YYMMDDhhmmss (years 2000-2099); None for anything else."""
    formats = {10: "%Y%m%d%H%M", 12: "%Y%m%d%H%M%S"}
    if not value.isdigit() or len(value) not in formats:
        return None
    try:
        return datetime.strptime("20" + value, formats[len(value)])
    except ValueError:
        return None
