"""A packet capture on loopback for the voice benchmark: SIP to and from the worker, RTP both ways.

A `bench.common.packets.PacketSocket` on `lo` passing IPv4 UDP only, with the kernel's receive time per
packet (wall clock in ns, the clock Redis and the worker use too). What is kept is small: SIP start
lines and headers of interest, RTP headers, and the worker's payloads (to find its prompts).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from bench.common.packets import SNAP_SIP, PacketSocket, udp_filter

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


class Capture(PacketSocket):
    """Packets between the worker (its SIP port, any RTP port) and SIPp's media port."""

    def __init__(self, worker_sip_port: int, peer_media_port: int) -> None:
        super().__init__(udp_filter(SNAP_SIP), 8 << 20)
        self.sip_port = worker_sip_port
        self.media_port = peer_media_port
        self.result = Captured()

    def finish(self) -> Captured:
        """Stop (reading what is left) and return what was captured, with the kernel's counts."""
        self.stop()
        self.result.received, self.result.dropped = self.received, self.dropped
        return self.result

    def packet(self, at_ns: int, source: int, destination: int, payload: bytes) -> None:
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
