"""First partial on a seat, end to end: a baresip caller -> media worker -> ASR pool -> Redis -> seat.

The stack is the one of tests/voice/voice_stack.py (real redis-server, the core in this process with
its seat websocket server, `hotline-gateway media-worker` as a child process with live ASR, the
shipped flow with the tests' shorter timeouts), with the same test agents; queues the flow names
but the test config lacks are added, so a flow being extended does not stop the benchmark.

The call: a baresip caller whose microphone is a WAV of 4 s of silence and then navigation phrases
(espeak-ng, 8 kHz), each followed by 2 s of silence. It presses 0 at once; the ticket is offered to
seat a1, which accepts it; a1's agent phone (baresip, never answered) rings, so the caller stays in
the queue and keeps being transcribed. Speech onsets are taken from the caller's RTP packets on
loopback (an AF_PACKET capture with kernel timestamps, root or CAP_NET_RAW): the first 20 ms
packet at -40 dBFS or more after a quiet stretch. Without a capture they are estimated from the
moment baresip reported the call established plus the onset's offset in the WAV. Latency =
arrival of the first `transcript` frame for the ticket after the onset - the onset, same clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import redis.asyncio as aioredis
import tomli_w
from websockets.asyncio.client import ClientConnection, connect

from bench import BenchError
from bench.asr.audio import ONSET_RMS, onsets, silence, write_wav
from bench.asr.engine import summary
from bench.common.procs import die_with_parent, tail
from gateway.config import parse_config
from gateway.ivr.flow import parse_ivr_toml
from gateway.shell.app import Bound, Gateway
from gateway.shell.embedded_redis import EmbeddedRedis
from gateway.shell.embedded_redis import free_port as free_tcp_port
from gateway.voice.prompts import prompt_files, render_missing
from peers.audio import write_tone_wav
from peers.flows import FAST, write_flow
from peers.gateway_config import AGENT_TOKENS, make_raw_config
from peers.sip import Baresip, can_play_pcap, free_port
from peers.speech import read_pcm, synthesize

PHRASES = ["我要办理住房业务", "我要投诉", "交通问题", "企业服务", "我要交税", "房子的问题", "人工服务", "我想咨询"]
LEAD_S = 4.0  # silence before the first phrase: dial, press 0, offer, accept happen meanwhile
GAP_S = 2.0
KEY_PREFIX = "bench-asr"
CALLER = "13812345678"


def progress(message: str) -> None:
    print(f"[asr] {message}", file=sys.stderr, flush=True)


# --- the caller's audio ----------------------------------------------------------------------------


@dataclass(frozen=True)
class CallerAudio:
    path: Path
    seconds: float
    onsets: list[float]


def caller_audio(folder: Path) -> CallerAudio:
    pcm = bytearray(silence(LEAD_S))
    for i, text in enumerate(PHRASES):
        _, speech = read_pcm(synthesize(text, folder / f"phrase-{i}.wav", speed=160))
        pcm += speech + silence(GAP_S)
    path = write_wav(folder / "caller.wav", bytes(pcm))
    return CallerAudio(path, len(pcm) / 16000, onsets(bytes(pcm), 8000))


# --- RTP capture -----------------------------------------------------------------------------------

_ETH_P_ALL = 0x0003
_SO_TIMESTAMPNS = 35
_PACKET_OUTGOING = 4  # loopback shows each packet twice: keep the incoming copy


def _alaw_table() -> np.ndarray:
    out = np.zeros(256)
    for code in range(256):
        a = code ^ 0x55
        t = (a & 0x0F) << 4
        seg = (a & 0x70) >> 4
        t = t + 8 if seg == 0 else (t + 0x108) << max(0, seg - 1)
        out[code] = t if a & 0x80 else -t
    return out


def _ulaw_table() -> np.ndarray:
    out = np.zeros(256)
    for code in range(256):
        u = ~code & 0xFF
        t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
        out[code] = (0x84 - t) if u & 0x80 else (t - 0x84)
    return out


_DECODE = {8: _alaw_table(), 0: _ulaw_table()}  # RTP payload types PCMA, PCMU


class RtpMeter:
    """The level of every G.711 packet sent from `ports` (the caller's RTP ports), kernel-timestamped."""

    def __init__(self, ports: range) -> None:
        self.ports = ports
        self.packets: list[tuple[int, float]] = []  # (wall clock ns, RMS on the 16-bit scale)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
        try:
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self._sock.setsockopt(socket.SOL_SOCKET, _SO_TIMESTAMPNS, 1)
            self._sock.bind(("lo", 0))
            self._sock.setblocking(False)
        except OSError:
            self._sock.close()
            raise

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def stop(self) -> list[tuple[int, float]]:
        if self._loop is not None:
            self._readable()
            self._loop.remove_reader(self._sock.fileno())
            self._loop = None
        self._sock.close()
        return self.packets

    def _readable(self) -> None:
        while True:
            try:
                data, ancillary, _, address = self._sock.recvmsg(2048, socket.CMSG_SPACE(16))
            except (BlockingIOError, InterruptedError, OSError):
                return
            if address[2] == _PACKET_OUTGOING or len(data) < 14 + 20 + 8 + 12 or data[12:14] != b"\x08\x00":
                continue
            ip = data[14:]
            if ip[9] != socket.IPPROTO_UDP:
                continue
            start = (ip[0] & 0x0F) * 4
            source = struct.unpack_from("!H", ip, start)[0]
            rtp = ip[start + 8 :]
            if source not in self.ports or rtp[0] >> 6 != 2 or (rtp[1] & 0x7F) not in _DECODE:
                continue
            at_ns = time.time_ns()
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == _SO_TIMESTAMPNS:
                    seconds, nanos = struct.unpack("qq", value[:16])
                    at_ns = seconds * 1_000_000_000 + nanos
            header = 12 + 4 * (rtp[0] & 0x0F)
            values = _DECODE[rtp[1] & 0x7F][np.frombuffer(rtp[header:], dtype=np.uint8)]
            if len(values):
                self.packets.append((at_ns, float(np.sqrt((values**2).mean()))))


def packet_onsets(packets: list[tuple[int, float]], min_gap_s: float = 0.8) -> list[int]:
    found: list[int] = []
    last_loud: int | None = None
    for at, rms in sorted(packets):
        if rms < ONSET_RMS:
            continue
        if last_loud is None or at - last_loud >= min_gap_s * 1e9:
            found.append(at)
        last_loud = at
    return found


# --- the seat ---------------------------------------------------------------------------------------


class SeatTap:
    """A seat (tests.helpers.Seat's handshake) that timestamps every frame as it arrives."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[tuple[int, dict[str, Any]]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def connect(cls, bound: Bound, agent: str) -> SeatTap:
        ws = await connect(f"ws://{bound.seats[0]}:{bound.seats[1]}", open_timeout=5)
        seat = cls(ws)
        await seat.send(type="hello", v=1, agent=agent, token=AGENT_TOKENS[agent], state="ready")
        await seat.wait("welcome", 5)
        return seat

    async def _read(self) -> None:
        with contextlib.suppress(Exception):
            async for data in self.ws:
                self.frames.append((time.time_ns(), json.loads(data)))
                self._changed.set()

    async def send(self, **frame: Any) -> None:
        await self.ws.send(json.dumps(frame, ensure_ascii=False))

    async def wait(self, kind: str, timeout: float) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                for _, frame in self.frames:
                    if frame.get("type") == kind:
                        return frame
                self._changed.clear()
                await self._changed.wait()

    async def close(self) -> None:
        await self.ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader


# --- the stack --------------------------------------------------------------------------------------


def flow_queues(flow_path: Path) -> set[str]:
    flow = parse_ivr_toml(flow_path.read_text(encoding="utf-8")).flow
    return {str(queue) for node in flow.nodes.values() if (queue := getattr(node, "queue", None))}


def write_config(tmp: Path, redis_url: str, sip_port: int, agent_uri: str, engine: str) -> tuple[Path, dict[str, Any]]:
    flow = write_flow(tmp / "flow.toml", FAST)
    prompts = tmp / "prompts"
    parsed = parse_ivr_toml(flow.read_text(encoding="utf-8")).flow
    specs = {pid: (spec.text, spec.file) for pid, spec in parsed.prompts.items()}
    render_missing(list(prompt_files(specs, prompts, parsed.id, prompts, max_position=5)), speed=300)
    raw = make_raw_config(KEY_PREFIX, redis_url)
    known = {queue["name"] for queue in raw["queues"]}
    raw["queues"] += [
        {"name": name, "label": name, "skills": [name], "priority": 0} for name in sorted(flow_queues(flow) - known)
    ]
    for agent in raw["agents"]:
        if agent["id"] == "a1":
            agent["sip_uri"] = agent_uri
    raw["seats"]["offer_timeout"] = 10
    raw["voice"] = {
        "enabled": True,
        "listen": f"127.0.0.1:{sip_port}",
        "flows": [str(flow)],
        "numbers": {"12345": "12345-default"},
        "prompts_dir": str(prompts),
        "recordings_dir": str(tmp / "recordings"),
        "agent_answer_timeout": 300,  # the agent's phone rings for the whole call
        "max_position_announced": 5,
        "worker_timeout": 2,
        "heartbeat_interval": 0.5,
    }
    pool = {"workers": 1, "streams_per_worker": 2}
    raw["asr"] = {"enabled": True, "engine": engine, "after_answer": True, "pool": pool}
    path = tmp / "gateway.toml"
    path.write_text(tomli_w.dumps(raw))
    return path, raw


class WorkerProcess:
    """`hotline-gateway media-worker`, its log in a file, SIGTERM'd if this process dies."""

    def __init__(self, config: Path, redis_url: str, listen: str, log: Path) -> None:
        self.args = ["-m", "gateway.cli", "--log-level", "INFO", "media-worker", "--config", str(config)]
        self.args += ["--redis-url", redis_url, "--id", "bench-asr", "--listen", listen]
        self.log = log
        self.process: asyncio.subprocess.Process | None = None
        self._drain: asyncio.Task[None] | None = None

    async def start(self, timeout: float) -> None:
        with self.log.open("ab") as log:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, *self.args, stdout=asyncio.subprocess.PIPE, stderr=log, preexec_fn=die_with_parent
            )
        assert self.process.stdout is not None
        try:
            async with asyncio.timeout(timeout):
                while True:
                    line = (await self.process.stdout.readline()).decode(errors="replace")
                    if not line:
                        raise BenchError(f"the media worker exited at start:\n{tail(self.log)}")
                    if line.startswith("media-worker ready"):
                        break
        except TimeoutError:
            raise BenchError(f"the media worker was not ready within {timeout:.0f} s:\n{tail(self.log)}") from None
        self._drain = asyncio.create_task(self._discard(self.process.stdout))

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    async def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.returncode is not None:
            return
        self.process.terminate()
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        if self._drain is not None:
            self._drain.cancel()


async def measure(tmp: Path, engine: str) -> dict[str, Any]:
    audio = caller_audio(tmp)
    capture = can_play_pcap()  # the same permission: a raw socket
    async with contextlib.AsyncExitStack() as stack:
        server = EmbeddedRedis(port=free_tcp_port(), data_dir=tmp / "redis")
        stack.callback(server.stop)
        server.start()
        agent = Baresip(tmp / "agent", user="1001", audio_source=write_tone_wav(tmp / "tone.wav"), role="agent")
        stack.push_async_callback(agent.close)
        await agent.start()
        caller = Baresip.caller(tmp / "caller", audio.path, user=CALLER)
        stack.push_async_callback(caller.close)
        await caller.start()
        sip = f"127.0.0.1:{free_port(udp=True, tcp=False)}"
        config_path, raw = write_config(tmp, server.url, int(sip.rsplit(":", 1)[1]), agent.uri, engine)
        client = aioredis.Redis.from_url(server.url)
        stack.push_async_callback(client.aclose)
        gateway = Gateway(parse_config(raw, tmp), client)
        bound = await gateway.start()
        stack.push_async_callback(gateway.stop)
        worker = WorkerProcess(config_path, server.url, sip, tmp / "media-worker.log")
        stack.push_async_callback(worker.stop)
        started = time.perf_counter()
        await worker.start(timeout=120)
        worker_start = time.perf_counter() - started
        seat = await SeatTap.connect(bound, "a1")
        stack.push_async_callback(seat.close)
        meter = RtpMeter(range(caller.rtp_base, caller.rtp_base + caller.rtp_count)) if capture else None
        if meter is not None:
            meter.start()
            stack.callback(meter.stop)
        clock = time.time() - time.monotonic()  # baresip events carry monotonic times
        await caller.dial(f"sip:12345@{sip}")
        established = await caller.wait_event("CALL_ESTABLISHED", 10)
        await caller.send_dtmf("0")
        offer = await seat.wait("offer", 20)
        ticket = offer["ticket"]["id"]
        offered_ns = next(at for at, f in seat.frames if f.get("type") == "offer")
        await seat.send(type="accept", ticket=ticket)
        await caller.wait_event("CALL_CLOSED", audio.seconds + 30)
        await asyncio.sleep(2.0)  # the last segments of the call
        packets = meter.stop() if meter is not None else []
        if "callers' words into tickets off" in tail(worker.log, 400):
            raise BenchError(f"the media worker has no live ASR:\n{tail(worker.log)}")
        established_ns = int((established.at + clock) * 1e9)
        estimated = [established_ns + int(o * 1e9) for o in audio.onsets]
        measured = packet_onsets(packets) if packets else []
        return figures(
            ticket, seat.frames, measured or estimated, offered_ns, established_ns, worker_start,
            "rtp capture" if measured else "call established + offset in the WAV", estimated, measured,
        )  # fmt: skip
    raise AssertionError("unreachable")  # the exit stack does not swallow exceptions


def figures(
    ticket: str,
    frames: list[tuple[int, dict[str, Any]]],
    onset_ns: list[int],
    offered_ns: int,
    established_ns: int,
    worker_start_s: float,
    onset_source: str,
    estimated: list[int],
    measured: list[int],
) -> dict[str, Any]:
    heard = [(at, f["segment"]) for at, f in frames if f.get("type") == "transcript" and f.get("ticket") == ticket]
    usable = [o for o in onset_ns if o > offered_ns]
    latencies: list[float] = []
    samples: list[dict[str, Any]] = []
    for i, onset in enumerate(usable):
        until = usable[i + 1] if i + 1 < len(usable) else None
        stream_onset = (onset - established_ns) / 1e9
        first = next(
            (
                (at, seg)
                for at, seg in heard
                if at >= onset and (until is None or at < until) and float(seg.get("end", 0)) >= stream_onset - 0.5
            ),
            None,
        )
        if first is None:
            samples.append({"onset_s": round(stream_onset, 2), "latency_ms": None})
            continue
        latency = (first[0] - onset) / 1e9
        latencies.append(latency)
        samples.append({"onset_s": round(stream_onset, 2), "latency_ms": round(latency * 1000),
                        "final": bool(first[1].get("final")), "text": str(first[1].get("text", ""))})  # fmt: skip
    skew = [round((m - e) / 1e6) for m, e in zip(measured, estimated, strict=False)] if measured else []
    return {
        "measured": True,
        "onsets_from": onset_source,
        "utterances": len(usable),
        "skipped_before_offer": len(onset_ns) - len(usable),
        "with_transcript": len(latencies),
        "transcript_frames": len(heard),
        "finals": sum(1 for _, seg in heard if seg.get("final")),
        **summary(latencies),
        "samples": samples,
        "capture_vs_estimate_ms": skew,
        "worker_start_s": round(worker_start_s, 1),
    }


def run(tmp: Path, engine: str) -> dict[str, Any]:
    return asyncio.run(measure(tmp, engine))
