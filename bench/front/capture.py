"""Packet captures on loopback for the front benchmark: cheap enough for hundreds of calls.

The voice benchmark's capture (bench/voice/capture.py) reads every UDP packet in Python, which is
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
import time
from collections import Counter
from dataclasses import dataclass, field

from bench.common.packets import SNAP_RTP, SNAP_SIP, PacketSocket, port_filter
from bench.voice.capture import SipPacket, _sip


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


class SipCapture(PacketSocket):
    """SIP between the callers and Kamailio: packets of Kamailio's port whose other end is not a
    worker (`worker_ports`)."""

    def __init__(self, front_port: int, worker_ports: set[int]) -> None:
        super().__init__(port_filter(front_port, SNAP_SIP), 16 << 20)
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


class RtpSample(PacketSocket):
    """RTP to and from SIPp's media port (`-mp`; its pcap playback sends from that port too)."""

    def __init__(self, media_port: int) -> None:
        super().__init__(port_filter(media_port, SNAP_RTP), 32 << 20)
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
