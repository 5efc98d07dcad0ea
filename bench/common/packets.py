"""Packet capture on loopback for the benchmarks: an AF_PACKET socket with a classic BPF filter.

Root or CAP_NET_RAW (SIPp's pcap playback needs it anyway). Each packet carries the kernel's
receive time (SO_TIMESTAMPNS, wall clock in ns), so how late this process reads it does not matter.
Loopback shows each packet twice, outgoing then incoming: the filters keep the incoming copy.
"""

from __future__ import annotations

import asyncio
import ctypes
import socket
import struct

from bench import BenchError

_ETH_P_ALL = 0x0003
_SO_TIMESTAMPNS = 35
_SO_RCVBUFFORCE = 33
_SO_ATTACH_FILTER = 26
_SOL_PACKET = 263
_PACKET_STATISTICS = 6
SKF_AD_PKTTYPE = 0xFFFFF000 + 4  # SKF_AD_OFF + SKF_AD_PKTTYPE: the packet's type (4 = outgoing)
SNAP_SIP = 0x40000
SNAP_RTP = 14 + 20 + 8 + 12  # Ethernet + IPv4 + UDP + RTP header: nothing of the payload


def udp_filter(snap: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF: IPv4 UDP, incoming copies only, the first `snap` bytes.

    ld pkttype; jeq OUTGOING -> drop; ldh [12]; jne IPv4 -> drop; ldb [23]; jne UDP -> drop; accept."""
    return [
        (0x20, 0, 0, SKF_AD_PKTTYPE),  # ld  [pkttype]
        (0x15, 5, 0, 4),  # jeq #OUTGOING -> drop
        (0x28, 0, 0, 12),  # ldh [12]
        (0x15, 0, 3, 0x0800),  # jeq #IPv4 else drop
        (0x30, 0, 0, 23),  # ldb [23]
        (0x15, 0, 1, 17),  # jeq #UDP else drop
        (0x06, 0, 0, snap),  # ret #snap
        (0x06, 0, 0, 0),  # ret #0
    ]


def port_filter(port: int, snap: int) -> list[tuple[int, int, int, int]]:
    """Classic BPF: IPv4 UDP with `port` as source or destination, incoming copies only.

    ld pkttype; jeq OUTGOING -> drop; ldh [12]; jne IPv4 -> drop; ldb [23]; jne UDP -> drop;
    ldx 4*([14]&0xf); ldh [x+14] (source port); jeq port -> accept; ldh [x+16]; jeq port -> accept;
    drop. (jt/jf are relative jumps.)"""
    return [
        (0x20, 0, 0, SKF_AD_PKTTYPE),  # ld  [pkttype]
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


class PacketSocket:
    """An AF_PACKET socket on `lo` with a classic BPF `program`, read from the asyncio loop; each
    packet goes to `packet()` with the kernel's receive time."""

    def __init__(self, program: list[tuple[int, int, int, int]], buffer_bytes: int) -> None:
        try:
            self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        except PermissionError:
            raise BenchError("the packet capture needs root or CAP_NET_RAW") from None
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
