"""CMPP 3.0 (China Mobile Peer to Peer, v3.0) PDUs, without I/O: bytes in, frames out; frames in,
bytes out.

Every PDU is a 12-byte header (Total_Length, Command_Id, Sequence_Id: big-endian unsigned 32-bit)
then a body whose fields come in the order of the spec's tables, which are written here once, as
data (`_FIELDS`): each PDU's dataclass has its fields in that order, and one encoder and one
decoder walk the table. Kinds of field, as the spec names them:
- Unsigned Integer of 1, 2, 4 or 8 bytes, big-endian;
- Octet String of a fixed size: left-aligned, padded with NUL bytes (read up to the first NUL;
  Latin-1, so every byte reads and writes back as itself);
- raw bytes of a fixed size (the 16-byte MD5 authenticators);
- CMPP_SUBMIT's destinations (DestUsr_tl, then that many 32-byte Octet Strings) and the message
  (Msg_Length, then that many bytes of Msg_Content, kept as bytes: the text is the session's).

Sizes are v3.0's (v2.0 differs): terminal ids are 32 bytes (Fee_terminal_Id, Dest_terminal_Id,
Src_terminal_Id), Src_Id and Dest_Id 21, Service_Id 10, LinkID 20; CONNECT_RESP's Status and the
Results of SUBMIT_RESP/DELIVER_RESP are 4 bytes. A status report (DELIVER with
Registered_Delivery = 1) carries a 71-byte `StatusReport` as its Msg_Content.

`Decoder` frames a byte stream (the shared `framing.FrameBuffer`) and returns whole frames. It is
bounded: a Total_Length outside 12..`max_pdu` is a `CmppDecodeError` that is `fatal` (the stream's
framing is lost; the session closes the connection), so the buffer never holds more than one PDU's
worth beyond what was fed.
A frame of sound length whose body is wrong (an unknown Command_Id, a field cut short, a Msg_Length
that disagrees with Total_Length, bytes left over) is a CmppDecodeError that is not fatal: its
bytes are consumed and the next frame reads normally. The error carries the Sequence_Id and
Command_Id it read, the Msg_Id when it could be read, and the Result that answers it
(`error_response`): CMPP has no generic_nack, so only a request whose response carries a Result
(SUBMIT, DELIVER) or a Status (CONNECT) can be answered; anything else is logged and dropped.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import IntEnum
from typing import Any, ClassVar

from gateway.channels.sms.framing import FrameBuffer, FramingError, SmsDecodeError

HEADER = struct.Struct(">III")
HEADER_SIZE = HEADER.size
VERSION = 0x30
"""CMPP 3.0 as CONNECT's Version byte (high nibble major, low nibble minor)."""
MAX_DESTINATIONS = 100
"""DestUsr_tl's ceiling in the spec."""
MAX_PDU_SIZE = HEADER_SIZE + 151 + 32 * MAX_DESTINATIONS + 255
"""The longest PDU CMPP 3.0 can form: a SUBMIT to 100 destinations with 255 bytes of content (3,618)."""
REPORT_SIZE = 71


class Command(IntEnum):
    CONNECT = 0x00000001
    CONNECT_RESP = 0x80000001
    TERMINATE = 0x00000002
    TERMINATE_RESP = 0x80000002
    SUBMIT = 0x00000004
    SUBMIT_RESP = 0x80000004
    DELIVER = 0x00000005
    DELIVER_RESP = 0x80000005
    ACTIVE_TEST = 0x00000008
    ACTIVE_TEST_RESP = 0x80000008


class ConnectStatus(IntEnum):
    """CMPP_CONNECT_RESP's Status (anything above 4 is 'other error')."""

    OK = 0
    BAD_STRUCTURE = 1
    BAD_SOURCE_ADDR = 2
    AUTH_FAILED = 3
    VERSION_TOO_HIGH = 4


class Result(IntEnum):
    """The Result of CMPP_SUBMIT_RESP and CMPP_DELIVER_RESP (0-8 are shared; 9-13 are SUBMIT's)."""

    OK = 0
    BAD_STRUCTURE = 1
    BAD_COMMAND = 2
    DUPLICATE_SEQUENCE = 3
    BAD_LENGTH = 4
    BAD_FEE_CODE = 5
    TOO_LONG = 6
    BAD_SERVICE_ID = 7
    FLOW_CONTROL = 8
    NOT_SERVED = 9
    BAD_SRC_ID = 10
    BAD_MSG_SRC = 11
    BAD_FEE_TERMINAL = 12
    BAD_DEST_TERMINAL = 13


class MsgFmt(IntEnum):
    ASCII = 0
    SIM_CARD = 3
    BINARY = 4
    UCS2 = 8
    GBK = 15


class CmppDecodeError(SmsDecodeError):
    """Bytes from the peer that are not a CMPP 3.0 PDU; says what it could read of them."""

    def __init__(
        self,
        message: str,
        *,
        sequence_id: int | None = None,
        command_id: int | None = None,
        msg_id: int | None = None,
        result: Result = Result.BAD_STRUCTURE,
        fatal: bool = False,
    ) -> None:
        super().__init__(message, fatal=fatal)
        self.sequence_id = sequence_id
        self.command_id = command_id
        self.msg_id = msg_id
        self.result = result


# ---------------------------------------------------------------------------------------------
# Field kinds and the spec's tables


@dataclass(frozen=True, slots=True)
class _Uint:
    size: int  # 1, 2, 4 or 8 bytes


@dataclass(frozen=True, slots=True)
class _Str:
    size: int  # an Octet String, NUL-padded


@dataclass(frozen=True, slots=True)
class _Raw:
    size: int  # exactly this many bytes


@dataclass(frozen=True, slots=True)
class _Terminals:
    """A 1-byte count, then that many 32-byte Octet Strings (CMPP_SUBMIT's DestUsr_tl)."""

    size: int = 32


@dataclass(frozen=True, slots=True)
class _Content:
    """A 1-byte length, then that many bytes (Msg_Length, Msg_Content)."""


_Kind = _Uint | _Str | _Raw | _Terminals | _Content
_UINT_FORMATS = {1: ">B", 2: ">H", 4: ">I", 8: ">Q"}


class _Struct:
    """Base of the PDUs and the status report: the table of fields for encode and decode."""

    __slots__ = ()
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = ()


@dataclass(frozen=True, slots=True)
class Connect(_Struct):
    source_addr: str  # the SP's id (Source_Addr)
    authenticator: bytes  # AuthenticatorSource: `authenticator_source(...)`
    version: int
    timestamp: int  # MMDDHHMMSS as a decimal number (`timestamp_of`)

    COMMAND: ClassVar[Command] = Command.CONNECT
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = (
        ("source_addr", _Str(6)),
        ("authenticator", _Raw(16)),
        ("version", _Uint(1)),
        ("timestamp", _Uint(4)),
    )


@dataclass(frozen=True, slots=True)
class ConnectResp(_Struct):
    status: int
    authenticator: bytes  # AuthenticatorISMG (zeros when the status is an error)
    version: int

    COMMAND: ClassVar[Command] = Command.CONNECT_RESP
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = (
        ("status", _Uint(4)),
        ("authenticator", _Raw(16)),
        ("version", _Uint(1)),
    )


@dataclass(frozen=True, slots=True)
class Terminate(_Struct):
    COMMAND: ClassVar[Command] = Command.TERMINATE


@dataclass(frozen=True, slots=True)
class TerminateResp(_Struct):
    COMMAND: ClassVar[Command] = Command.TERMINATE_RESP


@dataclass(frozen=True, slots=True)
class ActiveTest(_Struct):
    COMMAND: ClassVar[Command] = Command.ACTIVE_TEST


@dataclass(frozen=True, slots=True)
class ActiveTestResp(_Struct):
    reserved: int = 0

    COMMAND: ClassVar[Command] = Command.ACTIVE_TEST_RESP
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = (("reserved", _Uint(1)),)


@dataclass(frozen=True, slots=True)
class Submit(_Struct):
    """CMPP_SUBMIT (SP -> ISMG). Msg_Id is the ISMG's to fill: an SP sends 0."""

    service_id: str
    msg_src: str  # the SP's id
    src_id: str  # the number the citizen sees the message from (the hotline's 1065/106 number)
    dest_terminal_ids: tuple[str, ...]
    msg_fmt: int
    msg_content: bytes
    msg_id: int = 0
    pk_total: int = 1
    pk_number: int = 1
    registered_delivery: int = 1
    msg_level: int = 0
    fee_user_type: int = 2  # 2: the SP pays (a public hotline's replies are free to the citizen)
    fee_terminal_id: str = ""
    fee_terminal_type: int = 0
    tp_pid: int = 0
    tp_udhi: int = 0
    fee_type: str = "01"  # 01: free
    fee_code: str = "000000"
    valid_time: str = ""
    at_time: str = ""
    dest_terminal_type: int = 0
    link_id: str = ""

    COMMAND: ClassVar[Command] = Command.SUBMIT
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = (
        ("msg_id", _Uint(8)),
        ("pk_total", _Uint(1)),
        ("pk_number", _Uint(1)),
        ("registered_delivery", _Uint(1)),
        ("msg_level", _Uint(1)),
        ("service_id", _Str(10)),
        ("fee_user_type", _Uint(1)),
        ("fee_terminal_id", _Str(32)),
        ("fee_terminal_type", _Uint(1)),
        ("tp_pid", _Uint(1)),
        ("tp_udhi", _Uint(1)),
        ("msg_fmt", _Uint(1)),
        ("msg_src", _Str(6)),
        ("fee_type", _Str(2)),
        ("fee_code", _Str(6)),
        ("valid_time", _Str(17)),
        ("at_time", _Str(17)),
        ("src_id", _Str(21)),
        ("dest_terminal_ids", _Terminals()),
        ("dest_terminal_type", _Uint(1)),
        ("msg_content", _Content()),
        ("link_id", _Str(20)),
    )


@dataclass(frozen=True, slots=True)
class SubmitResp(_Struct):
    msg_id: int
    result: int

    COMMAND: ClassVar[Command] = Command.SUBMIT_RESP
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = (("msg_id", _Uint(8)), ("result", _Uint(4)))


@dataclass(frozen=True, slots=True)
class Deliver(_Struct):
    """CMPP_DELIVER (ISMG -> SP): a citizen's message, or (Registered_Delivery = 1) a status report
    whose Msg_Content is a `StatusReport` (checked when the frame is decoded)."""

    msg_id: int
    dest_id: str  # our number (the service number the citizen wrote to)
    src_terminal_id: str  # the citizen's number (a report: the number our SUBMIT went to)
    msg_fmt: int
    msg_content: bytes
    service_id: str = ""
    tp_pid: int = 0
    tp_udhi: int = 0
    src_terminal_type: int = 0
    registered_delivery: int = 0
    link_id: str = ""

    COMMAND: ClassVar[Command] = Command.DELIVER
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = (
        ("msg_id", _Uint(8)),
        ("dest_id", _Str(21)),
        ("service_id", _Str(10)),
        ("tp_pid", _Uint(1)),
        ("tp_udhi", _Uint(1)),
        ("msg_fmt", _Uint(1)),
        ("src_terminal_id", _Str(32)),
        ("src_terminal_type", _Uint(1)),
        ("registered_delivery", _Uint(1)),
        ("msg_content", _Content()),
        ("link_id", _Str(20)),
    )


@dataclass(frozen=True, slots=True)
class DeliverResp(_Struct):
    msg_id: int  # the DELIVER's, echoed
    result: int

    COMMAND: ClassVar[Command] = Command.DELIVER_RESP
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = (("msg_id", _Uint(8)), ("result", _Uint(4)))


@dataclass(frozen=True, slots=True)
class StatusReport(_Struct):
    """The Msg_Content of a status report: what became of the SUBMIT whose Msg_Id it names."""

    msg_id: int
    stat: str  # DELIVRD, EXPIRED, DELETED, UNDELIV, ACCEPTD, UNKNOWN, REJECTD (or an ISMG's code)
    submit_time: str  # YYMMDDHHMM
    done_time: str  # YYMMDDHHMM
    dest_terminal_id: str
    smsc_sequence: int

    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = (
        ("msg_id", _Uint(8)),
        ("stat", _Str(7)),
        ("submit_time", _Str(10)),
        ("done_time", _Str(10)),
        ("dest_terminal_id", _Str(32)),
        ("smsc_sequence", _Uint(4)),
    )

    def serialize(self) -> bytes:
        return _encode_fields(self)

    @classmethod
    def parse(cls, content: bytes) -> StatusReport:
        """The report in a DELIVER's Msg_Content; ValueError when it is not 71 bytes of one."""
        if len(content) != REPORT_SIZE:
            raise ValueError(f"a status report is {REPORT_SIZE} bytes, not {len(content)}")
        values, _ = _decode_fields(cls.FIELDS, content, 0)
        return cls(**values)


Pdu = (
    Connect
    | ConnectResp
    | Terminate
    | TerminateResp
    | ActiveTest
    | ActiveTestResp
    | Submit
    | SubmitResp
    | Deliver
    | DeliverResp
)
PDU_TYPES: Mapping[int, type[Pdu]] = {
    cls.COMMAND: cls
    for cls in (
        Connect,
        ConnectResp,
        Terminate,
        TerminateResp,
        ActiveTest,
        ActiveTestResp,
        Submit,
        SubmitResp,
        Deliver,
        DeliverResp,
    )
}


@dataclass(frozen=True, slots=True)
class Frame:
    """One PDU as it travels: its Sequence_Id (a response repeats its request's) and its body."""

    sequence_id: int
    pdu: Pdu


def command_name(command_id: int) -> str:
    """For logs: `CMPP_SUBMIT`, or the number in hex for an id CMPP 3.0 does not define here."""
    try:
        return f"CMPP_{Command(command_id).name}"
    except ValueError:
        return f"0x{command_id:08x}"


# ---------------------------------------------------------------------------------------------
# Encoding


def encode(frame: Frame) -> bytes:
    """The frame's bytes; ValueError naming the field when a value does not fit its field."""
    body = _encode_fields(frame.pdu)
    if not 0 <= frame.sequence_id <= 0xFFFFFFFF:
        raise ValueError("sequence_id: not an unsigned 32-bit number")
    return HEADER.pack(HEADER_SIZE + len(body), frame.pdu.COMMAND, frame.sequence_id) + body


def _encode_fields(value: _Struct) -> bytes:
    return b"".join(_encode_field(name, kind, getattr(value, name)) for name, kind in value.FIELDS)


def _encode_field(name: str, kind: _Kind, value: Any) -> bytes:
    if isinstance(kind, _Uint):
        if not isinstance(value, int) or not 0 <= value < 1 << (8 * kind.size):
            raise ValueError(f"{name}: not an unsigned {8 * kind.size}-bit number")
        return struct.pack(_UINT_FORMATS[kind.size], value)
    if isinstance(kind, _Str):
        return _octet_string(name, value, kind.size)
    if isinstance(kind, _Raw):
        if not isinstance(value, bytes) or len(value) != kind.size:
            raise ValueError(f"{name}: {kind.size} bytes expected")
        return value
    if isinstance(kind, _Terminals):
        if not 1 <= len(value) <= MAX_DESTINATIONS:
            raise ValueError(f"{name}: 1 to {MAX_DESTINATIONS} numbers")
        return bytes([len(value)]) + b"".join(_octet_string(name, number, kind.size) for number in value)
    if not isinstance(value, bytes) or len(value) > 255:
        raise ValueError(f"{name}: at most 255 bytes")
    return bytes([len(value)]) + value


def _octet_string(name: str, value: str, size: int) -> bytes:
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        raise ValueError(f"{name}: only Latin-1 characters fit an Octet String") from None
    if len(raw) > size or b"\0" in raw:
        raise ValueError(f"{name}: at most {size} bytes, no NUL")
    return raw.ljust(size, b"\0")


# ---------------------------------------------------------------------------------------------
# Decoding


class _Short(Exception):
    """A field runs past the end of the body (turned into a CmppDecodeError with the frame's ids)."""


def _decode_fields(fields: tuple[tuple[str, _Kind], ...], body: bytes, offset: int) -> tuple[dict[str, Any], int]:
    values: dict[str, Any] = {}
    for name, kind in fields:
        values[name], offset = _decode_field(kind, body, offset)
    return values, offset


def _take(body: bytes, offset: int, size: int) -> bytes:
    if offset + size > len(body):
        raise _Short
    return body[offset : offset + size]


def _decode_field(kind: _Kind, body: bytes, offset: int) -> tuple[Any, int]:
    if isinstance(kind, _Uint):
        return int.from_bytes(_take(body, offset, kind.size), "big"), offset + kind.size
    if isinstance(kind, _Str):
        return _read_string(_take(body, offset, kind.size)), offset + kind.size
    if isinstance(kind, _Raw):
        return _take(body, offset, kind.size), offset + kind.size
    count = _take(body, offset, 1)[0]
    offset += 1
    if isinstance(kind, _Terminals):
        numbers = tuple(_read_string(_take(body, offset + i * kind.size, kind.size)) for i in range(count))
        return numbers, offset + count * kind.size
    return _take(body, offset, count), offset + count


def _read_string(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("latin-1")


def decode_body(command_id: int, sequence_id: int, body: bytes) -> Pdu:
    """The PDU of one frame's body; CmppDecodeError (not fatal) when it is not one."""
    cls = PDU_TYPES.get(command_id)
    if cls is None:
        raise CmppDecodeError(
            f"unknown Command_Id {command_name(command_id)}",
            sequence_id=sequence_id,
            command_id=command_id,
            result=Result.BAD_COMMAND,
        )
    msg_id = int.from_bytes(body[:8], "big") if cls in (Submit, Deliver) and len(body) >= 8 else None
    try:
        values, end = _decode_fields(cls.FIELDS, body, 0)
    except _Short:
        raise _body_error(f"{command_name(command_id)} cut short", sequence_id, command_id, msg_id) from None
    if end != len(body):
        raise _body_error(
            f"{command_name(command_id)} has {len(body) - end} bytes beyond its fields",
            sequence_id,
            command_id,
            msg_id,
        )
    pdu = cls(**values)
    if isinstance(pdu, Deliver) and pdu.registered_delivery == 1 and len(pdu.msg_content) != REPORT_SIZE:
        raise _body_error(
            f"status report of {len(pdu.msg_content)} bytes (not {REPORT_SIZE})", sequence_id, command_id, msg_id
        )
    return pdu


def _body_error(message: str, sequence_id: int, command_id: int, msg_id: int | None) -> CmppDecodeError:
    return CmppDecodeError(
        message, sequence_id=sequence_id, command_id=command_id, msg_id=msg_id, result=Result.BAD_LENGTH
    )


class Decoder:
    """Buffers a byte stream and returns its frames, one at a time (`next_frame`).

    Framed by the shared `framing.FrameBuffer`: it holds at most what was fed and not yet
    returned, and a frame may not claim more than `max_pdu` bytes. After a fatal error (a
    Total_Length outside 12..max_pdu) the stream cannot be framed again: every further call
    raises, and the caller closes the connection.
    """

    def __init__(self, max_pdu: int = MAX_PDU_SIZE) -> None:
        self._frames = FrameBuffer(header_size=HEADER_SIZE, max_pdu=max_pdu)

    def feed(self, data: bytes) -> None:
        self._frames.feed(data)

    @property
    def buffered(self) -> int:
        return self._frames.buffered

    def next_frame(self) -> Frame | None:
        """The next whole frame, None until one has arrived; CmppDecodeError for a malformed one
        (not fatal: consumed, call again; fatal: see the class)."""
        try:
            data = self._frames.next_frame()
        except FramingError as error:
            _, command_id, sequence_id = HEADER.unpack(error.header)
            raise CmppDecodeError(
                f"Total_Length {error.length} outside {HEADER_SIZE}..{self._frames.max_pdu}",
                sequence_id=sequence_id,
                command_id=command_id,
                result=Result.BAD_LENGTH,
                fatal=True,
            ) from None
        if data is None:
            return None
        _, command_id, sequence_id = HEADER.unpack_from(data)
        return Frame(sequence_id, decode_body(command_id, sequence_id, data[HEADER_SIZE:]))


def error_response(error: CmppDecodeError) -> Frame | None:
    """What CMPP lets the receiver answer a malformed request with: SUBMIT and DELIVER get their
    _RESP with the error's Result (and the Msg_Id when it was read), CONNECT its _RESP with Status
    1; anything else (a response, an unknown command, no readable header) gets nothing."""
    if error.sequence_id is None:
        return None
    if error.command_id == Command.DELIVER:
        return Frame(error.sequence_id, DeliverResp(error.msg_id or 0, error.result))
    if error.command_id == Command.SUBMIT:
        return Frame(error.sequence_id, SubmitResp(error.msg_id or 0, error.result))
    if error.command_id == Command.CONNECT:
        return Frame(error.sequence_id, ConnectResp(ConnectStatus.BAD_STRUCTURE, bytes(16), VERSION))
    return None


# ---------------------------------------------------------------------------------------------
# CONNECT's authenticators, timestamps and Msg_Id


def timestamp_of(moment: datetime) -> int:
    """CONNECT's Timestamp: MMDDHHMMSS read as a decimal number (January's begin with a 0 that
    the number drops; the authenticator uses the 10-digit text)."""
    return int(moment.strftime("%m%d%H%M%S"))


def authenticator_source(sp_id: str, secret: str, timestamp: int) -> bytes:
    """AuthenticatorSource = MD5(Source_Addr + 9 NUL bytes + shared secret + "MMDDHHMMSS")."""
    return hashlib.md5(
        sp_id.encode("latin-1") + bytes(9) + secret.encode() + f"{timestamp:010d}".encode(), usedforsecurity=False
    ).digest()


def authenticator_ismg(status: int, source: bytes, secret: str) -> bytes:
    """AuthenticatorISMG = MD5(Status + AuthenticatorSource + shared secret), Status as CMPP 3.0's
    4-byte big-endian field."""
    return hashlib.md5(struct.pack(">I", status) + source + secret.encode(), usedforsecurity=False).digest()


@dataclass(frozen=True, slots=True)
class MsgIdParts:
    """A Msg_Id's fields: when the ISMG made it (no year), the ISMG's code, a sequence."""

    month: int
    day: int
    hour: int
    minute: int
    second: int
    ismg: int  # 22 bits
    sequence: int  # 16 bits

    def value(self) -> int:
        stamp = (((self.month << 5 | self.day) << 5 | self.hour) << 6 | self.minute) << 6 | self.second
        return (stamp << 22 | self.ismg) << 16 | self.sequence


def msg_id_parts(value: int) -> MsgIdParts:
    return MsgIdParts(
        month=value >> 60 & 0xF,
        day=value >> 55 & 0x1F,
        hour=value >> 50 & 0x1F,
        minute=value >> 44 & 0x3F,
        second=value >> 38 & 0x3F,
        ismg=value >> 16 & 0x3FFFFF,
        sequence=value & 0xFFFF,
    )


def format_msg_id(value: int) -> str:
    """A Msg_Id as the gateway names it (message ids, receipts, logs): 16 hex digits, the 8 bytes
    as they travel, so a SUBMIT_RESP's id and its status report's are the same string."""
    return f"{value:016x}"
