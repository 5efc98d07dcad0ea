"""Churns prompt players through the real `Engine` in a process of its own, so a crash in PJSIP shows
as an exit status (tests/voice/test_engine_players.py).

`python engine_probe.py PLAYERS [--drop-at-once]`: plays one-frame prompts, many at a time, and stops
each around its end of file until PLAYERS have been stopped; prints one JSON line. A count, not a
duration: a loaded machine churns slower, not less. `--drop-at-once` destroys each stopped player
immediately instead of through `Engine.stop_player` (what the worker did before): PJSIP 2.15 then
calls a destroyed player's end-of-file handler and the process dies with SIGSEGV.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
import struct
import sys
import tempfile
import time
import wave
from pathlib import Path

import pjsua2 as pj

from gateway.config import VoiceConfig
from gateway.voice.engine import Engine, EngineSettings, Prompt

PLAYERS = 16  # alive at once, retired included: within MAX_RETIRED_PLAYERS, so only the grace releases them


def one_frame_wav(path: Path) -> None:
    rng = random.Random(5)
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(b"".join(struct.pack("<h", rng.randint(-9000, 9000)) for _ in range(160)))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


SAFETY_SECONDS = 100.0  # a churn that has not stopped its players by then reports what it did


async def churn(players: int, drop_at_once: bool, wav: Path, sink_path: Path) -> dict[str, int]:
    settings = EngineSettings.from_voice(VoiceConfig(), "127.0.0.1", free_port())  # the shipped [voice]
    engine = Engine(settings, lambda leg, uri: leg.hang_up(486))
    engine.start()
    sink = pj.AudioMediaRecorder()
    sink.createRecorder(str(sink_path))
    ends = 0

    def ended() -> None:
        nonlocal ends
        ends += 1

    # Each player is stopped 10-40 ms after it starts: around its one frame's end of file, when
    # the event may be queued or on its way.
    playing: list[tuple[float, Prompt]] = []
    started = stopped = 0
    rng = random.Random(11)
    deadline = time.monotonic() + SAFETY_SECONDS
    while stopped < players and time.monotonic() < deadline:
        while len(playing) + len(engine._retired_players) < PLAYERS:
            playing.append((time.monotonic() + rng.uniform(0.01, 0.04), engine.play(wav, sink, ended)))
            started += 1
        now = time.monotonic()
        due = [entry for entry in playing if entry[0] <= now]
        playing = [entry for entry in playing if entry[0] > now]
        while due:
            # No local name for the player: one left over would outlive libDestroy and abort.
            if drop_at_once:
                due.pop()[1].stopTransmit(sink)  # and destroyed now
            else:
                engine.stop_player(due.pop()[1], sink)
            stopped += 1
        engine.endpoint.libHandleEvents(0)
        engine._release_players()
        await asyncio.sleep(0.002)
    while playing:
        engine.stop_player(playing.pop()[1], sink)
    del sink
    await engine.shutdown()
    return {"started": started, "stopped": stopped, "ends": ends}


def main() -> int:
    players = int(sys.argv[1])
    with tempfile.TemporaryDirectory() as scratch:
        wav = Path(scratch) / "frame.wav"
        one_frame_wav(wav)
        result = asyncio.run(churn(players, "--drop-at-once" in sys.argv, wav, Path(scratch) / "sink.wav"))
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
