"""Each call of the voice benchmark, put together from the capture, the tickets and the frame stats.

Joins: SIP Call-ID -> the worker's RTP port (its 200 OK's SDP) and the caller id (From user, one per
SIPp call number) -> the ticket (`voice.caller`) -> the worker's frame stats (`voice.call_id`).
Prompt times come from the audio itself: the worker's G.711 payloads are decoded and compared with
the prompt's WAV, frame by frame, so "the greeting started" means its audio left the worker.
"""

from __future__ import annotations

import array
import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.voice.capture import Captured, RtpPacket, SipPacket
from gateway.voice.wav import read_pcm, wav_info

LOUD = 3000  # peak of a frame that is surely speech (the prompts are normalized to -3 dBFS)
MATCH = 0.1  # mean |decoded - WAV| / mean |WAV| below which a packet carries that WAV frame
DTMF_PT = 101
STALL_MS = 40.0  # a send gap this long means the bridge clock missed at least one tick


def _alaw(code: int) -> int:
    """G.711 A-law to 16-bit linear (the reference decoder: Sun's alaw2linear)."""
    code ^= 0x55
    value = (code & 0x0F) << 4
    segment = (code & 0x70) >> 4
    if segment == 0:
        value += 8
    elif segment == 1:
        value += 0x108
    else:
        value = (value + 0x108) << (segment - 1)
    return value if code & 0x80 else -value


ALAW = [_alaw(code) for code in range(256)]


@dataclass(frozen=True)
class PromptAudio:
    """A prompt's first loud frame (its index and samples), to be found in the worker's RTP."""

    name: str
    index: int
    samples: array.array[int]
    frame_samples: int = 160

    @classmethod
    def load(cls, path: Path, frame_samples: int = 160) -> PromptAudio:
        _, samples = read_pcm(path)
        for index in range(len(samples) // frame_samples):
            frame = samples[index * frame_samples : (index + 1) * frame_samples]
            if max(abs(s) for s in frame) >= LOUD:
                return cls(path.stem, index, frame, frame_samples)
        raise ValueError(f"{path}: no frame louder than {LOUD}")

    def carried_by(self, payload: bytes) -> bool:
        if len(payload) != self.frame_samples:
            return False
        error = sum(abs(ALAW[byte] - sample) for byte, sample in zip(payload, self.samples, strict=True))
        return error < MATCH * sum(abs(sample) for sample in self.samples)

    def start_ns(self, packets: Sequence[RtpPacket], after_ns: int) -> int | None:
        """When the prompt's first frame left the worker: the packet carrying its first loud frame,
        minus that frame's offset (the frames before it are sent too, 20 ms apart)."""
        for packet in packets:
            if packet.at_ns >= after_ns and self.carried_by(packet.payload):
                return packet.at_ns - self.index * self.frame_samples * 125_000  # 125 µs per sample
        return None


@dataclass
class Call:
    sip_call_id: str
    caller: str = ""
    invite_ns: int = 0
    answer_ns: int = 0
    bye_ns: int = 0
    final_status: int = 0
    worker_port: int = 0
    first_rtp_ms: float | None = None
    first_prompt_ms: float | None = None
    digit_ns: int = 0
    digit_to_hold_ms: float | None = None
    digit_to_queued_ms: float | None = None
    ticket: str = ""
    ticket_status: str = ""
    ivr_path: str = ""
    recording: str = ""
    recording_s: float = 0.0
    recording_rms: float = 0.0
    media_s: float = 0.0  # answer to BYE: how long the worker had the caller's audio
    frames: int = 0
    dropped: int = 0
    gap_p50_ms: float = 0.0
    gap_p99_ms: float = 0.0
    gap_max_ms: float = 0.0
    send_gaps: list[tuple[int, float]] = field(default_factory=list, repr=False)  # (end of the gap, ms)
    stalls: list[tuple[int, float]] = field(default_factory=list)  # (end of the gap, its ms) on the wire

    def summary(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if k != "send_gaps"}


def calls_from_sip(packets: Sequence[SipPacket]) -> dict[str, Call]:
    calls: dict[str, Call] = {}
    for packet in packets:
        call = calls.setdefault(packet.call_id, Call(packet.call_id))
        line, cseq = packet.start_line, packet.cseq
        if packet.to_worker and line.startswith("INVITE ") and not call.invite_ns:
            call.invite_ns, call.caller = packet.at_ns, packet.from_user
        elif packet.to_worker and line.startswith("BYE ") and not call.bye_ns:
            call.bye_ns = packet.at_ns
        elif not packet.to_worker and line.startswith("SIP/2.0 ") and cseq.endswith("INVITE"):
            status = int(line.split()[1])
            if status >= 200 and not call.final_status:
                call.final_status = status
                if status == 200:
                    call.answer_ns, call.worker_port = packet.at_ns, packet.audio_port
    return {call_id: call for call_id, call in calls.items() if call.invite_ns}


def add_media(call: Call, captured: Captured, greeting: PromptAudio, hold: PromptAudio) -> None:
    """First packet, greeting start, digit, hold start and send gaps of one call's RTP."""
    if not call.worker_port:
        return
    end = call.bye_ns or max((p.at_ns for p in captured.from_worker), default=call.invite_ns)
    sent = [p for p in captured.from_worker if p.worker_port == call.worker_port and call.invite_ns <= p.at_ns <= end]
    if sent:
        call.first_rtp_ms = round((sent[0].at_ns - call.invite_ns) / 1e6, 2)
    started = greeting.start_ns(sent, call.invite_ns)
    if started is not None:
        call.first_prompt_ms = round((started - call.invite_ns) / 1e6, 2)
    digits = (p for p in captured.to_worker if p.worker_port == call.worker_port and p.pt == DTMF_PT)
    call.digit_ns = next((p.at_ns for p in digits if call.invite_ns <= p.at_ns <= end), 0)
    if call.digit_ns:
        held = hold.start_ns(sent, call.digit_ns)
        if held is not None:
            call.digit_to_hold_ms = round((held - call.digit_ns) / 1e6, 2)
    # Consecutive frames only (timestamps one frame apart): the worker's send clock, not its pauses.
    consecutive = [
        (b.at_ns, (b.at_ns - a.at_ns) / 1e6) for a, b in itertools.pairwise(sent) if b.timestamp - a.timestamp == 160
    ]
    call.send_gaps = consecutive
    call.stalls = [(at, round(gap, 2)) for at, gap in consecutive if gap > STALL_MS]
    if call.answer_ns and call.bye_ns:
        call.media_s = round((call.bye_ns - call.answer_ns) / 1e9, 3)


def add_ticket(call: Call, ticket: Any, entry_ms: int | None) -> None:
    """The ticket's status, path, recording, and when it entered its queue (its stream entry id)."""
    call.ticket, call.ticket_status, call.ivr_path = ticket.id, ticket.status, ticket.ivr_path
    if entry_ms is not None and call.digit_ns:
        call.digit_to_queued_ms = round(entry_ms - call.digit_ns / 1e6, 2)
    recording = next((a.path for a in ticket.attachments if a.kind == "recording" and a.path), None)
    if recording and Path(recording).exists():
        info = wav_info(Path(recording))
        call.recording, call.recording_s, call.recording_rms = recording, round(info.seconds, 3), round(info.rms, 4)


def add_frames(call: Call, stats: dict[str, str]) -> None:
    call.frames, call.dropped = int(stats.get("frames", 0)), int(stats.get("dropped", 0))
    call.gap_p50_ms = float(stats.get("gap_p50_ms", 0))
    call.gap_p99_ms = float(stats.get("gap_p99_ms", 0))
    call.gap_max_ms = float(stats.get("gap_max_ms", 0))
