"""Live speech recognition for calls: the media worker's side of the ASR pool.

The pool's worker processes do the recognizing; this module only moves audio there and results
back. Audio comes from each call's live-audio ring (filled on the bridge thread) and is drained on
the loop every `PUMP_SECONDS`; `StreamHandle.feed` never blocks. Results arrive on the pool's reader
thread and are posted onto the loop. A call the pool cannot take (saturated, overflowed, engine
unavailable) is transcribed from its recording after the call instead (`hg:asr:pending`).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable
from typing import Protocol

from gateway.asr.engine import AsrUnavailable
from gateway.asr.pool import AsrPool, StreamEvent, StreamHandle
from gateway.asr.settings import AsrSettings

log = logging.getLogger("gateway.voice.asr")

PUMP_SECONDS = 0.1
RATE = 8000


class AudioSource(Protocol):
    def drain(self) -> list[tuple[float, bytes]]: ...


class LiveSpeech:
    def __init__(self, settings: AsrSettings, on_event: Callable[[StreamEvent], None]) -> None:
        """`on_event` runs on the loop: a segment of a call, or (closed) the end of its stream."""
        self._settings = settings
        self._on_event = on_event
        self._pool: AsrPool | None = None
        self._streams: dict[str, tuple[StreamHandle, AudioSource]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pump: asyncio.Task[None] | None = None
        self.unavailable = ""

    @property
    def available(self) -> bool:
        return self._pool is not None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        pool = AsrPool(self._settings, on_event=self._from_reader_thread)
        try:
            # On the loop (main) thread, at start-up, before calls are taken: the pool's processes die
            # with the thread that spawned them (PR_SET_PDEATHSIG), and this thread lives as long as
            # the worker; an executor thread might not.
            pool.start()
        except AsrUnavailable as exc:
            # Calls are still answered and recorded; the worker says so once, for every recognizer
            # together (`speech_summary`).
            self.unavailable = exc.message
            return
        self._pool = pool
        self._pump = asyncio.create_task(self._pump_audio(), name="asr-pump")

    @property
    def state(self) -> str:
        """For the start-up line: `on (engine, N streams)` or `off: why`."""
        if self._pool is not None:
            return f"on ({self._settings.engine}, {self._pool.capacity} streams)"
        return f"off: {self.unavailable}" if self.unavailable else "not started"

    def open(self, call_id: str, source: AudioSource) -> bool:
        """Start recognizing a call; False when it must be transcribed after the call instead."""
        if self._pool is None:
            return False
        handle = self._pool.open_stream(call_id, RATE)
        if handle is None:
            return False
        self._streams[call_id] = (handle, source)
        return True

    def finish(self, call_id: str) -> None:
        entry = self._streams.pop(call_id, None)
        if entry is not None:
            self._feed(call_id, *entry)
            entry[0].finish()

    def _feed(self, call_id: str, handle: StreamHandle, source: AudioSource) -> None:
        frames = source.drain()
        if frames and not handle.feed(b"".join(data for _, data in frames)):
            # The stream fell behind: the pool reports it closed-overflowed; stop feeding it.
            self._streams.pop(call_id, None)

    async def _pump_audio(self) -> None:
        while True:
            await asyncio.sleep(PUMP_SECONDS)
            for call_id, (handle, source) in list(self._streams.items()):
                self._feed(call_id, handle, source)

    def _from_reader_thread(self, event: StreamEvent) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._on_event, event)

    async def close(self) -> None:
        if self._pump is not None:
            self._pump.cancel()
        if self._pool is not None:
            await asyncio.to_thread(self._pool.close)


def speech_summary(
    enabled: bool, dictation: LiveSpeech | None, navigation: LiveSpeech | None, flows_navigate: bool
) -> str:
    """One line that says which recognizers run, for what, and what is missing (it used to be two
    lines a second apart, 'off' then 'on', about two different recognizers)."""
    if not enabled:
        return "speech recognition disabled ([asr] enabled = false): calls are recorded, not transcribed"
    parts = []
    if dictation is not None and dictation.available:
        parts.append(f"callers' words into tickets {dictation.state}")
    elif dictation is not None:
        parts.append(
            f"callers' words into tickets {dictation.state} (calls are recorded; "
            "`hotline-gateway transcribe --pending` transcribes them once the engine can run)"
        )
    if navigation is not None:
        parts.append(f"speech navigation (speech_route menus) {navigation.state}")
    elif flows_navigate:
        parts.append("speech navigation off ([asr] navigation_enabled = false): speech_route menus take their default")
    return "speech: " + "; ".join(parts)


class Tap:
    """One consumer's view of a call's live audio (see `FanOut`)."""

    def __init__(self, fan: FanOut, max_frames: int) -> None:
        self._fan = fan
        self.buffer: collections.deque[tuple[float, bytes]] = collections.deque(maxlen=max_frames)
        # Live means from now: the ring may still hold seconds from before this tap (measured: the
        # grammar's scores collapse when it is first fed several seconds of the prompt's silence).
        self.since = time.monotonic()

    def drain(self) -> list[tuple[float, bytes]]:
        self._fan.pull()
        frames = list(self.buffer)
        self.buffer.clear()
        return frames

    def close(self) -> None:
        self._fan.taps.discard(self)


class FanOut:
    """Several recognizers on one call (dictation and navigation): every tap sees every frame.

    Whichever tap drains first pulls the frames from the call's ring and hands each tap a copy;
    a tap nobody drains keeps only its last `max_frames` (bounded, like the ring itself)."""

    def __init__(self, source: AudioSource, max_frames: int) -> None:
        self._source = source
        self._max_frames = max_frames
        self.taps: set[Tap] = set()

    def tap(self) -> Tap:
        tap = Tap(self, self._max_frames)
        self.taps.add(tap)
        return tap

    def pull(self) -> None:
        frames = self._source.drain()
        if frames:
            for tap in self.taps:
                tap.buffer.extend(frame for frame in frames if frame[0] >= tap.since)
