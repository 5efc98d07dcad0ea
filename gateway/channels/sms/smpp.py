"""SMPP 3.4 PDUs, without I/O: bytes in, PDUs out; PDUs in, bytes out.

A PDU is a 16-byte header (command_length, command_id, command_status, sequence_number: big-endian
unsigned 32-bit) then a body: mandatory fields in the order of the spec's tables (written here once,
as data: each class's `FIELDS`, walked by one encoder and one decoder), then, where the PDU allows
them, optional TLVs (tag, length, value). Kinds of field: unsigned integers of 1 byte; C-Octet
Strings (ASCII up to a NUL, each with its maximum size counting the NUL and the status that names
it when it is wrong); the two SMPP times (empty or 16 characters); the short message (sm_length,
then that many bytes, at most 254).

Only what the gateway's ESME and the test SMSC use is read: the binds (transceiver; transmitter and
receiver so they can be refused), unbind, enquire_link, submit_sm, deliver_sm, their responses and
generic_nack. Any other command id is "unknown" (ESME_RINVCMDID).

`Decoder` frames the stream (`framing.FrameBuffer`, bounded by `max_pdu`) and returns PDUs. What is
malformed raises `SmppDecodeError` with the sequence number when the header was readable, the
command id, and the status that names the fault; `error_response` turns it into the generic_nack
that answers it. A command_length outside 16..max_pdu is `fatal` (the stream cannot be framed
again: the session answers, then closes); any other error consumed its PDU's bytes and the next
PDU reads normally.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, fields
from enum import IntEnum
from typing import Any, ClassVar

from gateway.channels.sms.framing import FrameBuffer, FramingError, SmsDecodeError
from gateway.channels.sms.text import Part, Receipt, parse_receipt, receipt_state

HEADER = struct.Struct(">IIII")
HEADER_SIZE = HEADER.size
INTERFACE_VERSION = 0x34
MAX_SHORT_MESSAGE = 254
# The longest PDU read: a deliver_sm with every field at its maximum and a full message_payload.
MAX_PDU_SIZE = HEADER_SIZE + 94 + MAX_SHORT_MESSAGE + 4 + 0xFFFF + 512

# esm_class bits
ESM_UDHI = 0x40  # the short message starts with a user data header
ESM_TYPE_MASK = 0x3C  # message type: 0 a message; 0x04 a delivery receipt, 0x20 an intermediate notification...
ESM_RECEIPT = 0x04
REGISTERED_DELIVERY_FINAL = 0x01  # a receipt on final success or failure


class Command(IntEnum):
    GENERIC_NACK = 0x80000000
    BIND_RECEIVER = 0x00000001
    BIND_RECEIVER_RESP = 0x80000001
    BIND_TRANSMITTER = 0x00000002
    BIND_TRANSMITTER_RESP = 0x80000002
    SUBMIT_SM = 0x00000004
    SUBMIT_SM_RESP = 0x80000004
    DELIVER_SM = 0x00000005
    DELIVER_SM_RESP = 0x80000005
    UNBIND = 0x00000006
    UNBIND_RESP = 0x80000006
    BIND_TRANSCEIVER = 0x00000009
    BIND_TRANSCEIVER_RESP = 0x80000009
    ENQUIRE_LINK = 0x00000015
    ENQUIRE_LINK_RESP = 0x80000015


class Status(IntEnum):
    """command_status values the gateway and the test SMSC use (SMPP 3.4 §5.1.3)."""

    ESME_ROK = 0x00
    ESME_RINVMSGLEN = 0x01
    ESME_RINVCMDLEN = 0x02
    ESME_RINVCMDID = 0x03
    ESME_RINVBNDSTS = 0x04
    ESME_RALYBND = 0x05
    ESME_RSYSERR = 0x08
    ESME_RINVSRCADR = 0x0A
    ESME_RINVDSTADR = 0x0B
    ESME_RINVMSGID = 0x0C
    ESME_RBINDFAIL = 0x0D
    ESME_RINVPASWD = 0x0E
    ESME_RINVSYSID = 0x0F
    ESME_RMSGQFUL = 0x14
    ESME_RINVSERTYP = 0x15
    ESME_RINVSYSTYP = 0x53
    ESME_RTHROTTLED = 0x58
    ESME_RINVSCHED = 0x61
    ESME_RINVEXPIRY = 0x62
    ESME_RX_T_APPN = 0x64
    ESME_RX_P_APPN = 0x65
    ESME_RINVOPTPARSTREAM = 0xC0
    ESME_RINVPARLEN = 0xC2
    ESME_RINVOPTPARAMVAL = 0xC4
    ESME_RUNKNOWNERR = 0xFF


def status_name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return f"status 0x{status:08x}"


class Tag(IntEnum):
    """The optional parameters (TLVs) read by name; others are kept as they came."""

    RECEIPTED_MESSAGE_ID = 0x001E
    SAR_MSG_REF_NUM = 0x020C
    SAR_TOTAL_SEGMENTS = 0x020E
    SAR_SEGMENT_SEQNUM = 0x020F
    SC_INTERFACE_VERSION = 0x0210
    MESSAGE_PAYLOAD = 0x0424
    MESSAGE_STATE = 0x0427


_TLV_SIZES: dict[int, tuple[int, int]] = {
    Tag.SAR_MSG_REF_NUM: (2, 2),
    Tag.SAR_TOTAL_SEGMENTS: (1, 1),
    Tag.SAR_SEGMENT_SEQNUM: (1, 1),
    Tag.SC_INTERFACE_VERSION: (1, 1),
    Tag.MESSAGE_STATE: (1, 1),
    Tag.RECEIPTED_MESSAGE_ID: (1, 65),
}


class SmppDecodeError(SmsDecodeError):
    """Bytes from the peer that are not an SMPP 3.4 PDU we read; says what it could read of them."""

    def __init__(
        self, message: str, *, status: int, sequence: int | None, command_id: int | None, fatal: bool = False
    ) -> None:
        super().__init__(message, fatal=fatal)
        self.status = status
        self.sequence = sequence
        self.command_id = command_id


class _FieldError(Exception):
    """Inside the decoder: what is wrong and which status names it (wrapped with the header)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# --- Field kinds ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _U8:
    pass


@dataclass(frozen=True, slots=True)
class _CString:
    size: int  # the maximum, its NUL included
    status: Status  # what an over-long value is answered with


@dataclass(frozen=True, slots=True)
class _Time:
    status: Status  # SMPP times are empty or 16 characters (YYMMDDhhmmsstnnp)


@dataclass(frozen=True, slots=True)
class _ShortMessage:
    pass


_Kind = _U8 | _CString | _Time | _ShortMessage


@dataclass(frozen=True, slots=True)
class Tlv:
    tag: int
    value: bytes


class Pdu:
    """Base of every PDU: its command id, its body's table, whether TLVs may follow."""

    __slots__ = ()
    COMMAND: ClassVar[Command]
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = ()
    TAKES_TLVS: ClassVar[bool] = False
    sequence: int

    @property
    def status(self) -> int:
        return 0  # a request's command_status is always 0

    def tlv(self, tag: int) -> bytes | None:
        """The value of the first TLV with this tag, if the PDU has one."""
        for item in getattr(self, "tlvs", ()):
            if item.tag == tag:
                return bytes(item.value)
        return None


class _Response(Pdu):
    __slots__ = ()


# --- The PDUs (fields in the order of SMPP 3.4 §4) -------------------------------------------


_BIND_FIELDS: tuple[tuple[str, _Kind], ...] = (
    ("system_id", _CString(16, Status.ESME_RINVSYSID)),
    ("password", _CString(9, Status.ESME_RINVPASWD)),
    ("system_type", _CString(13, Status.ESME_RINVSYSTYP)),
    ("interface_version", _U8()),
    ("addr_ton", _U8()),
    ("addr_npi", _U8()),
    ("address_range", _CString(41, Status.ESME_RINVPARLEN)),
)


@dataclass(frozen=True, slots=True)
class _Bind(Pdu):
    sequence: int
    system_id: str
    password: str
    system_type: str = ""
    interface_version: int = INTERFACE_VERSION
    addr_ton: int = 0
    addr_npi: int = 0
    address_range: str = ""
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = _BIND_FIELDS

    def __repr__(self) -> str:  # the password never reaches a log through a repr
        return f"{type(self).__name__}(sequence={self.sequence}, system_id={self.system_id!r}, password=***)"


@dataclass(frozen=True, slots=True, repr=False)
class BindTransceiver(_Bind):
    COMMAND: ClassVar[Command] = Command.BIND_TRANSCEIVER


@dataclass(frozen=True, slots=True, repr=False)
class BindTransmitter(_Bind):
    COMMAND: ClassVar[Command] = Command.BIND_TRANSMITTER


@dataclass(frozen=True, slots=True, repr=False)
class BindReceiver(_Bind):
    COMMAND: ClassVar[Command] = Command.BIND_RECEIVER


@dataclass(frozen=True, slots=True)
class _BindResp(_Response):
    sequence: int
    status: int = 0  # a field here; the base's property (always 0) for requests
    system_id: str = ""
    tlvs: tuple[Tlv, ...] = ()
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = (("system_id", _CString(16, Status.ESME_RINVSYSID)),)
    TAKES_TLVS: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class BindTransceiverResp(_BindResp):
    COMMAND: ClassVar[Command] = Command.BIND_TRANSCEIVER_RESP


@dataclass(frozen=True, slots=True)
class BindTransmitterResp(_BindResp):
    COMMAND: ClassVar[Command] = Command.BIND_TRANSMITTER_RESP


@dataclass(frozen=True, slots=True)
class BindReceiverResp(_BindResp):
    COMMAND: ClassVar[Command] = Command.BIND_RECEIVER_RESP


@dataclass(frozen=True, slots=True)
class Unbind(Pdu):
    sequence: int
    COMMAND: ClassVar[Command] = Command.UNBIND


@dataclass(frozen=True, slots=True)
class EnquireLink(Pdu):
    sequence: int
    COMMAND: ClassVar[Command] = Command.ENQUIRE_LINK


@dataclass(frozen=True, slots=True)
class _EmptyResp(_Response):
    sequence: int
    status: int = 0


@dataclass(frozen=True, slots=True)
class UnbindResp(_EmptyResp):
    COMMAND: ClassVar[Command] = Command.UNBIND_RESP


@dataclass(frozen=True, slots=True)
class EnquireLinkResp(_EmptyResp):
    COMMAND: ClassVar[Command] = Command.ENQUIRE_LINK_RESP


@dataclass(frozen=True, slots=True)
class GenericNack(_EmptyResp):
    COMMAND: ClassVar[Command] = Command.GENERIC_NACK


@dataclass(frozen=True, slots=True)
class _ShortMessagePdu(Pdu):
    """submit_sm and deliver_sm share their body (deliver_sm leaves the times empty)."""

    sequence: int
    source_addr: str
    destination_addr: str
    short_message: bytes = b""
    service_type: str = ""
    source_addr_ton: int = 0
    source_addr_npi: int = 0
    dest_addr_ton: int = 0
    dest_addr_npi: int = 0
    esm_class: int = 0
    protocol_id: int = 0
    priority_flag: int = 0
    schedule_delivery_time: str = ""
    validity_period: str = ""
    registered_delivery: int = 0
    replace_if_present_flag: int = 0
    data_coding: int = 0
    sm_default_msg_id: int = 0
    tlvs: tuple[Tlv, ...] = ()
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = (
        ("service_type", _CString(6, Status.ESME_RINVSERTYP)),
        ("source_addr_ton", _U8()),
        ("source_addr_npi", _U8()),
        ("source_addr", _CString(21, Status.ESME_RINVSRCADR)),
        ("dest_addr_ton", _U8()),
        ("dest_addr_npi", _U8()),
        ("destination_addr", _CString(21, Status.ESME_RINVDSTADR)),
        ("esm_class", _U8()),
        ("protocol_id", _U8()),
        ("priority_flag", _U8()),
        ("schedule_delivery_time", _Time(Status.ESME_RINVSCHED)),
        ("validity_period", _Time(Status.ESME_RINVEXPIRY)),
        ("registered_delivery", _U8()),
        ("replace_if_present_flag", _U8()),
        ("data_coding", _U8()),
        ("sm_default_msg_id", _U8()),
        ("short_message", _ShortMessage()),
    )
    TAKES_TLVS: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class SubmitSm(_ShortMessagePdu):
    COMMAND: ClassVar[Command] = Command.SUBMIT_SM


@dataclass(frozen=True, slots=True)
class DeliverSm(_ShortMessagePdu):
    COMMAND: ClassVar[Command] = Command.DELIVER_SM


@dataclass(frozen=True, slots=True)
class _MessageIdResp(_Response):
    sequence: int
    status: int = 0
    message_id: str = ""
    FIELDS: ClassVar[tuple[tuple[str, _Kind], ...]] = (("message_id", _CString(65, Status.ESME_RINVMSGID)),)


@dataclass(frozen=True, slots=True)
class SubmitSmResp(_MessageIdResp):
    COMMAND: ClassVar[Command] = Command.SUBMIT_SM_RESP


@dataclass(frozen=True, slots=True)
class DeliverSmResp(_MessageIdResp):
    COMMAND: ClassVar[Command] = Command.DELIVER_SM_RESP


PDU_CLASSES: dict[int, type[Pdu]] = {
    cls.COMMAND: cls
    for cls in (
        GenericNack,
        BindReceiver,
        BindReceiverResp,
        BindTransmitter,
        BindTransmitterResp,
        BindTransceiver,
        BindTransceiverResp,
        Unbind,
        UnbindResp,
        EnquireLink,
        EnquireLinkResp,
        SubmitSm,
        SubmitSmResp,
        DeliverSm,
        DeliverSmResp,
    )
}


def is_response(command_id: int) -> bool:
    return bool(command_id & 0x80000000)


# --- Encoding ------------------------------------------------------------------------------------


def encode(pdu: Pdu) -> bytes:
    """The PDU's bytes. Raises ValueError for what `decode` would refuse (an over-long field...).

    A response with an error status and nothing else to say goes without a body, as SMPP 3.4
    writes it (submit_sm_resp: "the body is not returned if the command_status is non-zero")."""
    body = b"" if _bodiless(pdu) else _encode_body(pdu)
    return HEADER.pack(HEADER_SIZE + len(body), pdu.COMMAND, pdu.status, pdu.sequence) + body


def _bodiless(pdu: Pdu) -> bool:
    if not isinstance(pdu, _Response) or pdu.status == 0:
        return False
    return all(getattr(pdu, name) == _default(pdu, name) for name, _ in pdu.FIELDS) and not getattr(pdu, "tlvs", ())


def _default(pdu: Pdu, name: str) -> Any:
    return next(field.default for field in fields(pdu) if field.name == name)  # type: ignore[arg-type]


def _encode_body(pdu: Pdu) -> bytes:
    if not 0 <= pdu.sequence <= 0xFFFFFFFF:
        raise ValueError(f"sequence_number {pdu.sequence} is not 32-bit")
    out = bytearray()
    for name, kind in pdu.FIELDS:
        out += _encode_field(name, kind, getattr(pdu, name))
    for item in getattr(pdu, "tlvs", ()):
        if not 0 <= item.tag <= 0xFFFF or len(item.value) > 0xFFFF:
            raise ValueError(f"TLV 0x{item.tag:04x} of {len(item.value)} bytes does not fit")
        out += struct.pack(">HH", item.tag, len(item.value)) + item.value
    return bytes(out)


def _encode_field(name: str, kind: _Kind, value: Any) -> bytes:
    if isinstance(kind, _U8):
        if not 0 <= value <= 0xFF:
            raise ValueError(f"{name} {value} is not one byte")
        return bytes([value])
    if isinstance(kind, _ShortMessage):
        if len(value) > MAX_SHORT_MESSAGE:
            raise ValueError(f"a short_message of {len(value)} bytes; at most {MAX_SHORT_MESSAGE}")
        return bytes([len(value)]) + bytes(value)
    if isinstance(kind, _Time) and len(value) not in (0, 16):
        raise ValueError(f"{name} is empty or 16 characters, not {len(value)}")
    size = kind.size if isinstance(kind, _CString) else 17
    raw: bytes = value.encode("ascii") if value.isascii() else b""
    if len(raw) != len(value) or b"\x00" in raw or len(raw) + 1 > size:
        raise ValueError(f"{name} must be ASCII without NUL, at most {size - 1} characters")
    return raw + b"\x00"


# --- Decoding ------------------------------------------------------------------------------------


def decode(frame: bytes) -> Pdu:
    """One whole PDU (its command_length already checked against the frame by the Decoder)."""
    command_length, command_id, status, sequence = HEADER.unpack_from(frame)
    cls = PDU_CLASSES.get(command_id)
    if cls is None:
        raise SmppDecodeError(
            f"unknown command_id 0x{command_id:08x}",
            status=Status.ESME_RINVCMDID,
            sequence=sequence,
            command_id=command_id,
        )
    try:
        values = _decode_body(cls, frame[HEADER_SIZE:command_length], status)
    except _FieldError as error:
        raise SmppDecodeError(
            f"{cls.COMMAND.name.lower()}: {error}", status=error.status, sequence=sequence, command_id=command_id
        ) from None
    if issubclass(cls, _Response):
        values["status"] = status
    values["sequence"] = sequence
    return cls(**values)


def _decode_body(cls: type[Pdu], body: bytes, status: int) -> dict[str, Any]:
    values: dict[str, Any] = {}
    if not body and issubclass(cls, _Response) and status != 0:
        return values  # an error response without a body: its fields keep their defaults
    offset = 0
    for name, kind in cls.FIELDS:
        values[name], offset = _decode_field(name, kind, body, offset)
    if cls.TAKES_TLVS:
        values["tlvs"] = _decode_tlvs(body, offset)
    elif offset != len(body):
        raise _FieldError(f"{len(body) - offset} bytes after the body", Status.ESME_RINVCMDLEN)
    return values


def _decode_field(name: str, kind: _Kind, body: bytes, offset: int) -> tuple[Any, int]:
    if offset >= len(body):
        raise _FieldError(f"the PDU ends before {name}", Status.ESME_RINVCMDLEN)
    if isinstance(kind, _U8):
        return body[offset], offset + 1
    if isinstance(kind, _ShortMessage):
        length = body[offset]
        end = offset + 1 + length
        if length > MAX_SHORT_MESSAGE:
            raise _FieldError(f"sm_length {length}; at most {MAX_SHORT_MESSAGE}", Status.ESME_RINVMSGLEN)
        if end > len(body):
            raise _FieldError(f"sm_length {length} but {len(body) - offset - 1} bytes follow", Status.ESME_RINVCMDLEN)
        return body[offset + 1 : end], end
    size = kind.size if isinstance(kind, _CString) else 17
    end = body.find(b"\x00", offset, offset + size)
    if end < 0:
        if body.find(b"\x00", offset) < 0:
            raise _FieldError(f"{name} has no NUL before the PDU ends", Status.ESME_RINVCMDLEN)
        raise _FieldError(f"{name} is longer than {size - 1} characters", kind.status)
    raw = body[offset:end]
    if not raw.isascii() or (isinstance(kind, _Time) and len(raw) not in (0, 16)):
        raise _FieldError(f"{name} is not a valid value", kind.status)
    return raw.decode("ascii"), end + 1


def _decode_tlvs(body: bytes, offset: int) -> tuple[Tlv, ...]:
    found: list[Tlv] = []
    while offset < len(body):
        if offset + 4 > len(body):
            raise _FieldError("a TLV is cut short in its header", Status.ESME_RINVOPTPARSTREAM)
        tag, length = struct.unpack_from(">HH", body, offset)
        value = body[offset + 4 : offset + 4 + length]
        if len(value) != length:
            raise _FieldError(f"TLV 0x{tag:04x} says {length} bytes, fewer follow", Status.ESME_RINVOPTPARSTREAM)
        _check_tlv(tag, value)
        found.append(Tlv(tag, value))
        offset += 4 + length
    return tuple(found)


def _check_tlv(tag: int, value: bytes) -> None:
    sizes = _TLV_SIZES.get(tag)
    if sizes and not sizes[0] <= len(value) <= sizes[1]:
        raise _FieldError(f"TLV 0x{tag:04x} of {len(value)} bytes", Status.ESME_RINVPARLEN)
    if tag == Tag.RECEIPTED_MESSAGE_ID and (value[-1:] != b"\x00" or not value.isascii()):
        raise _FieldError("receipted_message_id is not a C-Octet String", Status.ESME_RINVOPTPARAMVAL)


class Decoder:
    """Buffers a byte stream and returns its PDUs, one at a time (`next_pdu`); bounded by `max_pdu`."""

    def __init__(self, max_pdu: int = MAX_PDU_SIZE) -> None:
        self._frames = FrameBuffer(header_size=HEADER_SIZE, max_pdu=max_pdu)

    @property
    def buffered(self) -> int:
        return self._frames.buffered

    def feed(self, data: bytes) -> None:
        self._frames.feed(data)

    def next_pdu(self) -> Pdu | None:
        """The next whole PDU, None until one has arrived. SmppDecodeError for a malformed one: not
        fatal, its bytes are consumed, call again; fatal, the stream is lost (see the module)."""
        try:
            frame = self._frames.next_frame()
        except FramingError as error:
            _, command_id, _, sequence = HEADER.unpack(error.header)
            raise SmppDecodeError(
                f"command_length {error.length} outside {HEADER_SIZE}..{self._frames.max_pdu}",
                status=Status.ESME_RINVCMDLEN,
                sequence=sequence,
                command_id=command_id,
                fatal=True,
            ) from None
        return None if frame is None else decode(frame)


def error_response(error: SmppDecodeError) -> GenericNack | None:
    """The generic_nack that answers a malformed PDU; None for a malformed response (answering a
    response would start a loop of answers) or when no sequence number could be read."""
    if error.sequence is None or (error.command_id is not None and is_response(error.command_id)):
        return None
    return GenericNack(sequence=error.sequence, status=error.status)


# --- What the sessions build and read --------------------------------------------------------


def sar_tlvs(ref: int, total: int, seq: int) -> tuple[Tlv, ...]:
    return (
        Tlv(Tag.SAR_MSG_REF_NUM, ref.to_bytes(2, "big")),
        Tlv(Tag.SAR_TOTAL_SEGMENTS, bytes([total])),
        Tlv(Tag.SAR_SEGMENT_SEQNUM, bytes([seq])),
    )


def sar_of(pdu: DeliverSm | SubmitSm) -> tuple[int, int, int] | None:
    """(ref, total, seq) from the SAR TLVs, None when the PDU has none of them. ValueError when
    only some are there or the numbers are impossible."""
    values = [pdu.tlv(tag) for tag in (Tag.SAR_MSG_REF_NUM, Tag.SAR_TOTAL_SEGMENTS, Tag.SAR_SEGMENT_SEQNUM)]
    if all(value is None for value in values):
        return None
    ref, total, seq = (None if value is None else int.from_bytes(value, "big") for value in values)
    if ref is None or total is None or seq is None:
        raise ValueError("sar_msg_ref_num, sar_total_segments and sar_segment_seqnum come together")
    if not 1 <= seq <= total:
        raise ValueError(f"SAR segment {seq} of {total}")
    return ref, total, seq


def submit_sm_for(part: Part, *, sequence: int, source: str, dest: str, registered_delivery: int) -> SubmitSm:
    """One part of an outbound text as the submit_sm that carries it (UDHI set when it has a UDH)."""
    return SubmitSm(
        sequence=sequence,
        source_addr=source,
        destination_addr=dest,
        short_message=part.short_message,
        esm_class=ESM_UDHI if part.udh else 0,
        registered_delivery=registered_delivery,
        data_coding=part.data_coding,
        source_addr_ton=_ton(source),
        source_addr_npi=1,
        dest_addr_ton=_ton(dest),
        dest_addr_npi=1,
    )


def _ton(number: str) -> int:
    """International (1) for a number written with +, else unknown (0): the SMSC decides."""
    return 1 if number.startswith("+") else 0


def is_receipt(pdu: DeliverSm) -> bool:
    """A deliver_sm that reports on a message (a receipt, a notification), not a citizen's text."""
    return bool(pdu.esm_class & ESM_TYPE_MASK)


# message_state (SMPP 3.4 §5.2.28) as the receipt states of the text core
_MESSAGE_STATES = {2: "DELIVRD", 3: "EXPIRED", 4: "DELETED", 5: "UNDELIV", 6: "ACCEPTD", 7: "UNKNOWN", 8: "REJECTD"}


def receipt_of(pdu: DeliverSm) -> Receipt:
    """The receipt a deliver_sm carries: its text (Appendix B), with receipted_message_id and
    message_state, when present, taking precedence (the TLV carries the id exactly as
    submit_sm_resp gave it; some SMSCs write the text's id in another base). ValueError when
    neither says which message and how it went."""
    text = (pdu.tlv(Tag.MESSAGE_PAYLOAD) or pdu.short_message).decode("latin-1")
    receipted = pdu.tlv(Tag.RECEIPTED_MESSAGE_ID)
    state = pdu.tlv(Tag.MESSAGE_STATE)
    try:
        receipt = parse_receipt(text)
    except ValueError:
        if receipted is None or state is None:
            raise
        return Receipt(receipted[:-1].decode("ascii"), receipt_state(_MESSAGE_STATES.get(state[0], "")), "", None)
    if receipted is not None:
        receipt = Receipt(receipted[:-1].decode("ascii"), receipt.state, receipt.error, receipt.done_at)
    return receipt


def fingerprint(pdu: DeliverSm) -> str:
    """An id for a deliver_sm that a redelivery keeps: the fields an SMSC resends unchanged."""
    digest = hashlib.sha256()
    for value in (pdu.source_addr, pdu.destination_addr, str(pdu.data_coding), str(pdu.esm_class)):
        digest.update(value.encode() + b"\x00")
    digest.update(pdu.short_message)
    for item in pdu.tlvs:
        digest.update(struct.pack(">HH", item.tag, len(item.value)) + item.value)
    return digest.hexdigest()[:32]
