"""Packet captures on loopback for the front benchmark: cheap enough for hundreds of calls.

The voice benchmark's capture (bench/voice_capture.py) reads every UDP packet in Python, which is
fine for 2 calls and not for 200 (20,000 RTP packets a second). Here the kernel filters first (a
classic BPF program on the socket):

- `SipCapture`, for the whole run: only packets to or from Kamailio's SIP port, and only the copy
  the kernel delivers (loopback shows each packet twice). Python then keeps the ones exchanged with
  the callers (SIPp), not Kamailio's traffic with the workers (probes, relayed requests).
- `RtpSample`, for a couple of seconds at full load: only RTP to or from SIPp's media port, cut to
  its headers; it counts packets per worker RTP port and direction, so every call can be checked to
  carry audio both ways at that moment.

Root or CAP_NET_RAW (SIPp's pcap playback needs it anyway). Timestamps are the kernel's
(SO_TIMESTAMPNS, wall clock ns).
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass, field

from bench import BenchError
from bench.voice_capture import SipPacket, _sip

_ETH_P_ALL = 0x0003
_SO_TIMESTAMPNS = 35
_SO_RCVBUFFORCE = 33
_SO_ATTACH_FILTER = 26
_SOL_PACKET = 263
_PACKET_STATISTICS = 6
_SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE: the packet's type (4 = outgoing)
_SNAP_SIP = 0x40000
_SNAP_RTP = 14 + 20 + 8 + 12  # Ethernet + IPv4 + UDP + RTP header: nothing of the payload


def _port_filter(port: int, snap: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF: IPv4 UDP with `port` as source or destination, incoming copies only.

    ld pkttype; jeq OUTGOING -> drop; ldh [12]; jne IPv4 -> drop; ldb [23]; jne UDP -> drop;
    ldx 4*([14]&0xf); ldh [x+14] (source port); jeq port -> accept; ldh [x+16]; jeq port -> accept;
    drop. (jt/jf are relative jumps.)"""
    return [
        (0x20, 0, 0, _SKF_AD_PKTTYPE),  # ld  [pkttype]
        (0x15, 10, 0, 4),  # jeq #OUTGOING -> drop
        (0x28, 0, 0, 12),  # ldh [12]
        (0x15, 0, 8, 0x0800),  # jeq #IPv4 else drop
        (0x30, 0, 0, 23),  # ldb [23]
        (0x15, 0, 6, 17),  # jeq #UDP else drop
        (0xB1, 0, 0, 14),  # ldxb 4*([14]&0xf)
        (0x48, 0, 0, 14),  # ldh [x+14]
        (0x15, 2, 0, port),  # jeq #port -> accept
        (0x48, 0, 0, 16),  # ldh [x+16]
        (0x15, 0, 1, port),  # jeq #port else drop
        (0x06, 0, 0, snap),  # ret #snap
        (0x06, 0, 0, 0),  # ret #0
    ]


class _Socket:
    """An AF_PACKET socket on `lo` with a port filter, read from the asyncio loop."""

    def __init__(self, port: int, snap: int, buffer_bytes: int) -> None:
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        except PermissionError:
            raise BenchError("the packet capture needs root or CAP_NET_RAW") from None
        program = _port_filter(port, snap)
        try:
            try:  # beyond net.core.rmem_max (often 208 KiB: a few hundred packets) needs root
                self._sock.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, buffer_bytes)
            except PermissionError:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, buffer_bytes)
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            code = b"".join(struct.pack("HBBI", *op) for op in program)
            buffer = ctypes.create_string_buffer(code)
            fprog = struct.pack("HL", len(program), ctypes.addressof(buffer))
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
            self._sock.bind(("lo", 0))
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise
        self._loop: asyncio.AbstractEventLoop | None = None
        self.received = 0
        self.dropped = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def stop(self) -> None:
        if self._loop is not None:
            self._readable()
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None
        if self._sock.fileno() >= 0:
            packets, drops = struct.unpack("II", self._sock.getsockopt(_SOL_PACKET, _PACKET_STATISTICS, 8))
            self.received += packets
            self.dropped += drops
            self._sock.close()

    def _readable(self) -> None:
        while True:
            try:
                data, ancillary, _, _ = self._sock.recvmsg(2048, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError):
                return
            at_ns = 0
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    at_ns = seconds * 1_000_000_000 + nanos
            ip = data[14:]
            start = (ip[0] & 0x0F) * 4
            source, destination = struct.unpack_from("!HH", ip, start)
            self.packet(at_ns, source, destination, ip[start + 8 :])

    def packet(self, at_ns: int, source: int, destination: int, payload: bytes) -> None:
        raise NotImplementedError


@dataclass(frozen=True)
class Incident:
    """Something that fails a call on the wire after its INVITE was answered: a BYE the caller
    received (the worker or Kamailio hung up, not SIPp), or the caller's BYE answered with an error."""

    at_ns: int
    call_id: str
    what: str


@dataclass
class SipCaptured:
    sip: list[SipPacket] = field(default_factory=list)  # `to_worker` here means: to Kamailio
    incidents: list[Incident] = field(default_factory=list)
    received: int = 0
    dropped: int = 0


class SipCapture(_Socket):
    """SIP between the callers and Kamailio: packets of Kamailio's port whose other end is not a
    worker (`worker_ports`)."""

    def __init__(self, front_port: int, worker_ports: set[int]) -> None:
        super().__init__(front_port, _SNAP_SIP, 16 << 20)
        self.front_port = front_port
        self.worker_ports = worker_ports
        self.result = SipCaptured()

    def packet(self, at_ns: int, source: int, destination: int, payload: bytes) -> None:
        other = destination if source == self.front_port else source
        if other in self.worker_ports:
            return
        parsed = _sip(at_ns, destination == self.front_port, payload)
        if parsed is None:
            return
        self.result.sip.append(parsed)
        if parsed.to_worker:
            return
        line = parsed.start_line
        if line.startswith("BYE "):
            self.result.incidents.append(Incident(at_ns, parsed.call_id, "hung up by the far end"))
        elif parsed.cseq.endswith("BYE") and line.startswith("SIP/2.0 ") and line[8:9] in "3456":
            self.result.incidents.append(Incident(at_ns, parsed.call_id, f"BYE answered {line[8:11]}"))

    def finish(self) -> SipCaptured:
        self.stop()
        self.result.received, self.result.dropped = self.received, self.dropped
        return self.result


@dataclass
class RtpCounts:
    """Packets in the sample window, per worker RTP port: sent by the worker, and sent to it."""

    start_ns: int = 0
    end_ns: int = 0
    from_worker: Counter[int] = field(default_factory=Counter)
    to_worker: Counter[int] = field(default_factory=Counter)
    received: int = 0
    dropped: int = 0


class RtpSample(_Socket):
    """RTP to and from SIPp's media port (`-mp`; its pcap playback sends from that port too)."""

    def __init__(self, media_port: int) -> None:
        super().__init__(media_port, _SNAP_RTP, 32 << 20)
        self.media_port = media_port
        self.result = RtpCounts()

    def packet(self, at_ns: int, source: int, destination: int, payload: bytes) -> None:
        if len(payload) < 12 or payload[0] >> 6 != 2:
            return
        if destination == self.media_port:
            self.result.from_worker[source] += 1
        else:
            self.result.to_worker[destination] += 1

    async def take(self, seconds: float) -> RtpCounts:
        self.result.start_ns = time.time_ns()
        self.start()
        await asyncio.sleep(seconds)
        self.stop()
        self.result.end_ns = time.time_ns()
        self.result.received, self.result.dropped = self.received, self.dropped
        return self.result
