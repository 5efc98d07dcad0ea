"""A media engine without pjsua2, for driving whole calls through `CallSession` in fast tests.

It implements `gateway.voice.media.MediaEngine` as the worker and its sessions use it, keeps what
it was asked to do (prompts played, recordings, connections, legs dialled) and lets the test play
the far ends: a caller who answers, presses keys and hangs up; an agent's phone that rings, answers
or refuses; a prompt that reaches its end. Recordings are real WAV files (a second of tone), so
the settlement reads them as it reads PJSIP's. Timers run on `FakeScheduler`: the test fires them.

What the fake does not stand in for: SIP and RTP themselves, PJSIP's threads and their hand-overs;
the real-pjsua2 tests (`test_worker.py`, `test_worker_lifeline.py`, `test_worker_sip.py`) keep those.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from gateway.voice.engine import EngineSettings
from gateway.voice.framestats import FrameStats
from gateway.voice.media import Audio, CallLeg, LegListener, LegState, LiveTap, MediaError
from peers.audio import write_tone_wav


@dataclass(eq=False)
class FakeMedia:
    """A leg's audio endpoint."""

    name: str


@dataclass(eq=False)
class FakePlayer:
    path: Path
    target: Audio
    on_end: Callable[[], None]
    stopped: bool = False

    @property
    def prompt(self) -> str:
        return self.path.stem


@dataclass(eq=False)
class FakeRecorder:
    path: Path
    source: Audio


@dataclass(eq=False)
class FakeLive:
    name: str
    sources: list[Audio] = field(default_factory=list)
    destroyed: bool = False

    def listen(self, source: Audio) -> None:
        self.sources.append(source)

    def drain(self) -> list[tuple[float, bytes]]:
        return []

    @property
    def stats(self) -> FrameStats:
        return FrameStats()


class FakeLeg:
    """One leg; the test plays its far end. State changes reach the listener on the next loop turn,
    as PJSIP's come from its poll, never from inside the call that caused them."""

    def __init__(self, engine: FakeEngine, remote: str, local: str, label: str = "") -> None:
        self.engine = engine
        self.listener: LegListener | None = None
        self.label = label
        self.media: Audio | None = None
        self.disconnected = False
        self.answered_with: int | None = None
        self.hung_up_with: int | None = None
        self._remote, self._local = remote, local

    def parties(self) -> tuple[str, str]:
        return self._remote, self._local

    def accept(self, status: int = 200) -> None:
        self.answered_with = status

    def hang_up(self, status: int = 200) -> None:
        """Our side ends the leg: a ringing phone's end says 487 (Request Terminated), else 200."""
        if self.disconnected or self.hung_up_with is not None:
            return
        self.hung_up_with = status
        self._end_soon(487 if self.media is None and self.answered_with is None else 200)

    # --- the far end ---------------------------------------------------------------------------

    def media_up(self) -> None:
        """The call's audio is active (the caller's after the answer, an agent's once it picked up)."""
        self.media = FakeMedia(self.label or self._remote)
        assert self.listener is not None
        self.listener.on_media(self, self.media)

    def press(self, digit: str) -> None:
        assert self.listener is not None
        self.listener.on_digit(self, digit)

    def ring(self) -> None:
        self._state(LegState.EARLY, 180)

    def pick_up(self) -> None:
        """The phone answers: its audio comes up, then the dialog is confirmed (PJSIP's order)."""
        self.answered_with = 200
        self.media_up()
        self._state(LegState.CONFIRMED, 200)

    def refuse(self, status: int) -> None:
        self._end(status)

    def far_end_hangs_up(self) -> None:
        self._end(200)

    def _state(self, state: LegState, status: int) -> None:
        assert self.listener is not None
        self.listener.on_state(self, state, status)

    def _end(self, status: int) -> None:
        if self.disconnected:
            return
        self.disconnected, self.media = True, None
        self._state(LegState.DISCONNECTED, status)

    def _end_soon(self, status: int) -> None:
        asyncio.get_running_loop().call_soon(self._end, status)


class FakeEngine:
    """`MediaEngine` for the tests; `make_engine` of a `MediaWorker`."""

    def __init__(self, settings: EngineSettings, on_incoming: Callable[[CallLeg, str], None]) -> None:
        self.settings = settings
        self.on_incoming = on_incoming
        self.legs: list[FakeLeg] = []
        self.dialled: list[tuple[str, FakeLeg]] = []
        self.players: list[FakePlayer] = []
        self.recorders: list[FakeRecorder] = []
        self.connections: list[tuple[Audio, Audio]] = []
        self.ports: list[FakeLive] = []
        self.refuse_recording = False  # the next `record` fails as PJSIP's would (disk full, say)
        self.started = False

    @property
    def active_legs(self) -> int:
        return sum(1 for leg in self.legs if not leg.disconnected)

    @property
    def native_live_audio(self) -> bool:
        return False

    def start(self) -> None:
        self.started = True

    async def shutdown(self, timeout: float = 5.0) -> None:
        for leg in self.legs:
            leg.hang_up()
        await asyncio.sleep(0)  # the legs' ends arrive on the next loop turn

    # --- what a worker and its sessions ask -----------------------------------------------------

    def dial(self, uri: str, listener: LegListener, label: str) -> CallLeg:
        leg = FakeLeg(self, uri, f"sip:gateway@{self.settings.host}", label)
        leg.listener = listener
        self.legs.append(leg)
        self.dialled.append((uri, leg))
        return leg

    def play(self, path: Path, target: Audio, on_end: Callable[[], None]) -> Audio:
        player = FakePlayer(path, target, on_end)
        self.players.append(player)
        return player

    def stop_player(self, player: Audio, target: Audio | None) -> None:
        player.stopped = True

    def record(self, path: Path, source: Audio) -> Audio:
        if self.refuse_recording:
            self.refuse_recording = False
            raise MediaError(f"record: cannot create {path.name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        write_tone_wav(path, 440.0, 1.0)
        recorder = FakeRecorder(path, source)
        self.recorders.append(recorder)
        return recorder

    def connect(self, source: Audio, sink: Audio) -> None:
        self.connections.append((source, sink))

    def live_audio(self, source: Audio, name: str, max_frames: int) -> LiveTap:
        port = FakeLive(name)
        port.listen(source)
        self.ports.append(port)
        return port

    def destroy_port(self, port: LiveTap) -> None:
        assert isinstance(port, FakeLive)
        port.destroyed = True

    # --- the test's hand -----------------------------------------------------------------------

    def call_in(self, caller: str = "13812345678", number: str = "12345") -> FakeLeg:
        """A caller dials `number`; the worker answers (or refuses) it; its audio comes up."""
        leg = FakeLeg(self, f"<sip:{caller}@127.0.0.1:5090>", f"<sip:{number}@{self.settings.host}>")
        self.legs.append(leg)
        self.on_incoming(leg, f"sip:{number}@{self.settings.host}:{self.settings.port}")
        if leg.answered_with == 200:
            leg.media_up()
        return leg

    def playing(self, leg: FakeLeg) -> FakePlayer | None:
        """The prompt playing to `leg` now (the last one started and not stopped)."""
        live = [p for p in self.players if p.target is leg.media and not p.stopped]
        return live[-1] if live else None

    def now_playing(self, leg: FakeLeg) -> str | None:
        """The id of the prompt playing to `leg` now, if any."""
        player = self.playing(leg)
        return player.prompt if player is not None else None

    def finish_prompt(self, leg: FakeLeg) -> str:
        """The prompt playing to `leg` reaches its end; its id."""
        player = self.playing(leg)
        assert player is not None, "nothing plays to this leg"
        player.stopped = True
        player.on_end()
        return player.prompt

    def prompts(self, leg: FakeLeg) -> list[str]:
        """Every prompt played to `leg`, in order."""
        return [p.prompt for p in self.players if p.target is leg.media]

    def recording(self, kind: str) -> FakeRecorder | None:
        found = [r for r in self.recorders if r.path.stem.endswith(f"-{kind}")]
        return found[-1] if found else None


@dataclass(eq=False)
class FakeTimer:
    delay: float
    callback: Callable[[], object]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeScheduler:
    """A session's timers, fired by the test (`fire`), never by the clock."""

    def __init__(self) -> None:
        self.timers: list[FakeTimer] = []

    def call_later(self, delay: float, callback: Callable[[], object], /) -> FakeTimer:
        timer = FakeTimer(delay, callback)
        self.timers.append(timer)
        return timer


def fire(session_timers: Mapping[str, object], kind: str) -> None:
    """Fire the session's armed timer of `kind` (`queue.max_wait`, `agent.ring`, ...)."""
    [name] = [name for name in session_timers if name.startswith(kind + "#")]
    timer = session_timers[name]
    assert isinstance(timer, FakeTimer) and not timer.cancelled
    timer.callback()
