"""Length-prefixed framing, as SMPP and CMPP both frame their PDUs: the first 4 bytes of a PDU are
its whole length (header included), big-endian. Bounded: a PDU may not claim more than `max_pdu`
bytes, so the buffer never holds more than one PDU's worth beyond what was fed last."""

from __future__ import annotations

import struct

from gateway.errors import InvalidRequest

_LENGTH = struct.Struct(">I")


class SmsDecodeError(InvalidRequest):
    """Bytes from the peer that are not a PDU of its protocol (each codec names what it read of
    them). `fatal`: the stream's framing is lost for good, and the connection with it."""

    code = "malformed_pdu"

    def __init__(self, message: str, *, fatal: bool) -> None:
        super().__init__(message)
        self.fatal = fatal


class FramingError(ValueError):
    """A length outside the protocol's bounds: the stream's framing is lost for good."""

    def __init__(self, length: int, header: bytes) -> None:
        super().__init__(f"a PDU length of {length}")
        self.length = length
        self.header = header  # the header bytes that were there (an error response may quote them)


class FrameBuffer:
    """Buffers a byte stream and returns whole PDUs (`next_frame`), each as its bytes."""

    def __init__(self, *, header_size: int, max_pdu: int) -> None:
        self.header_size = header_size
        self.max_pdu = max_pdu
        self._buffer = bytearray()
        self._broken: FramingError | None = None

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def feed(self, data: bytes) -> None:
        self._buffer += data

    def next_frame(self) -> bytes | None:
        """The next whole PDU, or None until it has arrived. A length outside header_size..max_pdu
        raises FramingError, then again on every call (the caller closes the connection)."""
        if self._broken is not None:
            raise self._broken
        if len(self._buffer) < self.header_size:
            return None
        (length,) = _LENGTH.unpack_from(self._buffer)
        if not self.header_size <= length <= self.max_pdu:
            self._broken = FramingError(length, bytes(self._buffer[: self.header_size]))
            self._buffer.clear()
            raise self._broken
        if len(self._buffer) < length:
            return None
        frame = bytes(self._buffer[:length])
        del self._buffer[:length]
        return frame
