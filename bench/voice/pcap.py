"""The caller's audio for the voice benchmark: one pcap per call pattern, played by SIPp.

SIPp replays a pcap's RTP as it is (sequence numbers, timestamps, SSRC), so playing g711a.pcap
several times in one call would make the stream jump backwards, and a digit pcap played beside it
is a second stream. Instead this writes one continuous stream: g711a.pcap's PCMA payloads looped
for the whole call, with an RFC 4733 event (the digit) in the same stream at a chosen time, audio
paused while the key is held, as a phone does. SIPp rewrites the addresses and ports and computes
the UDP checksums; the file only has to be Ethernet + IPv4 + UDP + RTP, like the one it loops.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from bench import BenchError

SPEECH_PCAP = Path("/usr/share/sip-tester/g711a.pcap")
DTMF_PT = 101
DTMF_EVENTS = {**{d: int(d) for d in "0123456789"}, "*": 10, "#": 11}
_PCAP_HEADER = struct.Struct("<IHHiIII")
_RECORD = struct.Struct("<IIII")
_ETHERNET = bytes(12) + b"\x08\x00"
_DIGIT_PACKETS = 7  # 7 × 20 ms = 140 ms held, then the end packet three times (RFC 4733 §2.5.1.4)
_DIGIT_STEP_S = 0.02


@dataclass(frozen=True)
class Speech:
    """The looped source: payload type, samples per packet, seconds per packet, payloads."""

    payload_type: int
    samples: int
    period_s: float
    payloads: list[bytes]


def read_pcap(path: Path) -> list[tuple[float, bytes]]:
    """(timestamp, frame) of every record of a little-endian microsecond pcap."""
    data = path.read_bytes()
    if len(data) < _PCAP_HEADER.size or _PCAP_HEADER.unpack_from(data)[0] != 0xA1B2C3D4:
        raise BenchError(f"{path}: not a little-endian pcap file")
    if _PCAP_HEADER.unpack_from(data)[6] != 1:
        raise BenchError(f"{path}: not an Ethernet capture")
    records, offset = [], _PCAP_HEADER.size
    while offset + _RECORD.size <= len(data):
        seconds, micros, length, _ = _RECORD.unpack_from(data, offset)
        offset += _RECORD.size
        records.append((seconds + micros / 1e6, data[offset : offset + length]))
        offset += length
    return records


def rtp_of_frame(frame: bytes) -> bytes:
    """The RTP packet (header included) inside an Ethernet/IPv4/UDP frame."""
    ip = frame[14:]
    return ip[(ip[0] & 0x0F) * 4 + 8 :]


def load_speech(path: Path = SPEECH_PCAP) -> Speech:
    if not path.exists():
        raise BenchError(f"{path} is missing: `apt-get install sip-tester` ships it")
    packets = [rtp_of_frame(frame) for _, frame in read_pcap(path)]
    audio = [rtp for rtp in packets if rtp[1] & 0x7F == 8]  # PCMA
    if len(audio) < 10:
        raise BenchError(f"{path}: fewer than 10 PCMA packets")
    samples = len(audio[0]) - 12
    return Speech(8, samples, samples / 8000, [rtp[12:] for rtp in audio])


def _frame(rtp: bytes) -> bytes:
    udp = struct.pack("!HHHH", 4000, 4002, 8 + len(rtp), 0) + rtp  # ports and checksum: SIPp's job
    total = 20 + len(udp)
    ip = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, total, 0, 0x4000, 64, 17, 0, bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1])
    )
    return _ETHERNET + ip + udp


def _rtp(marker: bool, pt: int, seq: int, timestamp: int, ssrc: int, payload: bytes) -> bytes:
    return (
        struct.pack("!BBHII", 0x80, (0x80 if marker else 0) | pt, seq & 0xFFFF, timestamp & 0xFFFFFFFF, ssrc) + payload
    )


def caller_stream(seconds: float, digit: str, digit_at: float, speech: Speech) -> list[tuple[float, bytes]]:
    """(send time, RTP packet) of one call: speech for `seconds`, the digit pressed at `digit_at`."""
    if digit not in DTMF_EVENTS:
        raise BenchError(f"no RFC 4733 event for digit {digit!r}")
    ssrc, seq, timestamp, t, index = 0x5EED0001, 1000, 160_000, 0.0, 0
    packets: list[tuple[float, bytes]] = []
    pressed = False
    while t < seconds:
        if not pressed and t >= digit_at:
            pressed = True
            event = DTMF_EVENTS[digit]
            for step in range(_DIGIT_PACKETS + 3):
                end = step >= _DIGIT_PACKETS
                duration = 160 * min(step + 1, _DIGIT_PACKETS)
                body = struct.pack("!BBH", event, (0x80 if end else 0) | 10, duration)
                at = t + _DIGIT_STEP_S * min(step, _DIGIT_PACKETS)
                packets.append((at, _rtp(step == 0, DTMF_PT, seq, timestamp, ssrc, body)))
                seq += 1
            held = _DIGIT_PACKETS * _DIGIT_STEP_S + speech.period_s
            t += held
            timestamp += round(held * 8000)
            continue
        payload = speech.payloads[index % len(speech.payloads)]
        packets.append((t, _rtp(False, speech.payload_type, seq, timestamp, ssrc, payload)))
        seq, timestamp, index, t = seq + 1, timestamp + speech.samples, index + 1, t + speech.period_s
    return packets


def write_pcap(path: Path, packets: list[tuple[float, bytes]], start: float = 1_700_000_000.0) -> Path:
    chunks = [_PCAP_HEADER.pack(0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for at, rtp in packets:
        frame = _frame(rtp)
        stamp = start + at
        seconds = int(stamp)
        chunks.append(
            _RECORD.pack(seconds, min(999_999, round((stamp - seconds) * 1e6)), len(frame), len(frame)) + frame
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(chunks))
    return path
