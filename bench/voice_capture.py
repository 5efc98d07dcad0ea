"""A packet capture on loopback for the voice benchmark: SIP to and from the worker, RTP both ways.

An AF_PACKET socket on `lo` (root or CAP_NET_RAW, which SIPp's pcap playback needs anyway) with a
classic BPF filter that passes IPv4 UDP only. Each packet carries the kernel's receive time
(SO_TIMESTAMPNS, wall clock in ns, the clock Redis and the worker use too), so how late this process
reads it does not matter. Read from the asyncio loop (`add_reader`); what is kept is small: SIP
start lines and headers of interest, RTP headers, and the worker's payloads (to find its prompts).
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import struct
from dataclasses import dataclass, field

from bench import BenchError

_ETH_P_ALL = 0x0003
_SO_TIMESTAMPNS = 35
_SO_ATTACH_FILTER = 26
_SOL_PACKET = 263
_PACKET_STATISTICS = 6
_PACKET_OUTGOING = 4  # loopback shows each packet twice, outgoing then incoming: keep one (as libpcap does)
# ldh [12]; jeq #0x800 else drop; ldb [23]; jeq #17 (UDP) else drop; accept; drop
_UDP_ONLY = [
    (0x28, 0, 0, 12),
    (0x15, 0, 3, 0x0800),
    (0x30, 0, 0, 23),
    (0x15, 0, 1, 17),
    (0x06, 0, 0, 0x40000),
    (0x06, 0, 0, 0),
]
_SIP_HEADERS = {"call-id": "call_id", "i": "call_id", "from": "from", "f": "from", "cseq": "cseq"}


@dataclass(frozen=True)
class SipPacket:
    at_ns: int
    to_worker: bool
    start_line: str
    call_id: str
    from_user: str
    cseq: str
    audio_port: int  # m=audio port of its SDP; 0 without one


@dataclass(frozen=True)
class RtpPacket:
    at_ns: int
    worker_port: int  # the worker's end of the stream
    pt: int
    seq: int
    timestamp: int
    payload: bytes  # kept for the worker's packets and digit events; b"" for the caller's audio


@dataclass
class Captured:
    sip: list[SipPacket] = field(default_factory=list)
    from_worker: list[RtpPacket] = field(default_factory=list)
    to_worker: list[RtpPacket] = field(default_factory=list)
    received: int = 0
    dropped: int = 0  # by the kernel: the socket's buffer overflowed


def _sip(at_ns: int, to_worker: bool, data: bytes) -> SipPacket | None:
    text = data.decode("utf-8", errors="replace")
    head, _, body = text.partition("\r\n\r\n")
    lines = head.split("\r\n")
    if not lines or "SIP/2.0" not in lines[0]:
        return None
    values = {"call_id": "", "from": "", "cseq": ""}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = _SIP_HEADERS.get(name.strip().lower())
        if key:
            values[key] = value.strip()
    user = values["from"].split("sip:", 1)[-1].split("@", 1)[0] if "sip:" in values["from"] else ""
    port = 0
    for line in body.split("\r\n"):
        if line.startswith("m=audio "):
            port = int(line.split()[1])
    return SipPacket(at_ns, to_worker, lines[0], values["call_id"], user, values["cseq"], port)


class Capture:
    """Packets between the worker (its SIP port, any RTP port) and SIPp's media port."""

    def __init__(self, worker_sip_port: int, peer_media_port: int) -> None:
        self.sip_port = worker_sip_port
        self.media_port = peer_media_port
        self.result = Captured()
        self._loop: asyncio.AbstractEventLoop | None = None
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        except PermissionError:
            raise BenchError("the packet capture needs root or CAP_NET_RAW") from None
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            program = b"".join(struct.pack("HBBI", *op) for op in _UDP_ONLY)
            buffer = ctypes.create_string_buffer(program)
            fprog = struct.pack("HL", len(_UDP_ONLY), ctypes.addressof(buffer))
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
            self._sock.bind(("lo", 0))
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def stop(self) -> Captured:
        if self._loop is not None:
            self._readable()
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None
        if self._sock.fileno() >= 0:
            packets, drops = struct.unpack("II", self._sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8))
            self.result.received += packets
            self.result.dropped += drops
            self._sock.close()
        return self.result

    def _readable(self) -> None:
        while True:
            try:
                data, ancillary, _, address = self._sock.recvmsg(2048, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            if address[2] == _PACKET_OUTGOING:
                continue
            at_ns = 0
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    at_ns = seconds * 1_000_000_000 + nanos
            self._packet(at_ns, data)

    def _packet(self, at_ns: int, frame: bytes) -> None:
        ip = frame[14:]
        start = (ip[0] & 0x0F) * 4
        source, destination = struct.unpack_from("!HH", ip, start)
        payload = ip[start + 8 :]
        if self.sip_port in (source, destination):
            packet = _sip(at_ns, destination == self.sip_port, payload)
            if packet is not None:
                self.result.sip.append(packet)
        elif self.media_port in (source, destination) and len(payload) >= 12 and payload[0] >> 6 == 2:
            pt = payload[1] & 0x7F
            seq, timestamp = struct.unpack_from("!HI", payload, 2)
            if destination == self.media_port:
                self.result.from_worker.append(RtpPacket(at_ns, source, pt, seq, timestamp, payload[12:]))
            else:
                body = payload[12:] if pt != 8 else b""
                self.result.to_worker.append(RtpPacket(at_ns, destination, pt, seq, timestamp, body))
