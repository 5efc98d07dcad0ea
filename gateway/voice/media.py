"""What a call session and its worker ask of the media engine: the interface `gateway.voice.engine`
implements with pjsua2, and the tests' fake engine (`tests/voice/fake_engine.py`) without it.

Audio endpoints, players, recorders and live-audio ports are opaque handles here (`Audio`): the
session passes them back to the engine and never calls into them. A leg reports to its listener in
the engine's terms translated (`LegState`), and every media operation that fails raises
`MediaError`, never the library's own error.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from pathlib import Path
from typing import Any, Protocol

from gateway.voice.framestats import FrameStats

Audio = Any
"""An engine's audio endpoint (a leg's media, a player, a recorder): pjsua2 objects in the real one."""


class MediaError(Exception):
    """A media operation failed (the library refused it, or a leg has no active audio)."""


class LegState(Enum):
    """Where a leg's INVITE session is, as far as a call session cares."""

    EARLY = "early"  # a provisional response (180 Ringing, 183): the far end rings
    CONFIRMED = "confirmed"  # answered and acknowledged
    DISCONNECTED = "disconnected"  # ended (its last SIP status says how)
    OTHER = "other"  # calling, incoming, connecting: nothing to act on


class LegListener(Protocol):
    def on_state(self, leg: CallLeg, state: LegState, status: int) -> None: ...
    def on_media(self, leg: CallLeg, media: Audio) -> None: ...
    def on_digit(self, leg: CallLeg, digit: str) -> None: ...


class CallLeg(Protocol):
    """One call leg (a caller's, or the one ringing an agent)."""

    listener: LegListener | None
    label: str

    @property
    def media(self) -> Audio | None:
        """Its active audio, or None (not yet, or no longer)."""

    @property
    def disconnected(self) -> bool: ...

    def parties(self) -> tuple[str, str]:
        """(remote URI, local URI) of its dialog; MediaError when its INVITE session is over."""

    def accept(self, status: int = 200) -> None: ...

    def hang_up(self, status: int = 200) -> None: ...


class LiveTap(Protocol):
    """A leg's PCM frames off the conference bridge, into a bounded ring the loop drains."""

    def listen(self, source: Audio) -> None: ...

    def drain(self) -> list[tuple[float, bytes]]: ...

    @property
    def stats(self) -> FrameStats: ...


class Cancellable(Protocol):
    def cancel(self) -> None: ...


class Scheduler(Protocol):
    """Where a session's timers run: the event loop, or a test's hand."""

    def call_later(self, delay: float, callback: Callable[[], object], /) -> Cancellable: ...


class MediaEngine(Protocol):
    """The engine as a worker and its call sessions use it; every method runs on the loop thread."""

    @property
    def active_legs(self) -> int: ...

    @property
    def native_live_audio(self) -> bool: ...

    def start(self) -> None: ...

    async def shutdown(self, timeout: float = 5.0) -> None: ...

    def dial(self, uri: str, listener: LegListener, label: str) -> CallLeg:
        """Call `uri`; its states come to `listener`."""

    def play(self, path: Path, target: Audio, on_end: Callable[[], None]) -> Audio:
        """Play a WAV file to `target`; `on_end` comes on the loop when it reached its end."""

    def stop_player(self, player: Audio, target: Audio | None) -> None: ...

    def record(self, path: Path, source: Audio) -> Audio:
        """Record `source` into a WAV file; the file is finished when the recorder is dropped."""

    def connect(self, source: Audio, sink: Audio) -> None:
        """`sink` hears `source` (a leg's media, a player, a recorder)."""

    def live_audio(self, source: Audio, name: str, max_frames: int) -> LiveTap: ...

    def destroy_port(self, port: LiveTap) -> None:
        """Take a live-audio port out of the bridge; its stats stay readable."""
