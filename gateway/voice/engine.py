"""The pjsua2 adapter: owns the PJSIP endpoint, call legs, players, recorders and frame ports.

Threading model (see docs/voice.md and ../shared/notes-pjsua2-findings.md):
- `libCreate`, every pjsua2 call and `libDestroy` happen on the asyncio loop thread. A task polls
  `libHandleEvents(0)` at once when the SIP socket is readable (`loop.add_reader` on the fd found in
  /proc), when a call into PJSIP may have scheduled a timer (`kick`), and when PJSIP's next timer is
  due (read from its timer heap by `_pjnative.next_timer`), at most `idle_poll_interval` apart; where
  the heap cannot be read, every `poll_interval` while calls are up. Every SIP callback is delivered
  inside that poll, on the loop thread; a DTMF digit comes from the media thread and is handed over.
- Live audio frames are taken on PJSIP's conference-bridge clock thread by a port written in C
  (`gateway/voice/_pjnative.c`: a bounded ring under a mutex, no GIL); the loop drains it. Where that
  module is missing or does not recognise the library, a `pj.AudioMediaPort` subclass does the same
  in Python on that thread (about half the thread's CPU, measured with perf at 200 calls).
- A player's end of file comes on PJSIP's event-manager thread (`ev_thread`); `Prompt.onEof2` only
  hands it over (`call_soon_threadsafe`). A stopped player is kept a while before it is destroyed
  (`Engine.stop_player`): destroyed with that event queued, PJSIP calls into it and crashes.
- Python keeps a reference to every live Leg, player, recorder and port until PJSIP is done with it;
  SWIG frame ports are destroyed explicitly (`__swig_destroy__`) before their last reference is
  dropped; C ports are freed by `_pjnative.reap()` once PJSIP has let go of them.

This module translates; it decides nothing. `Leg` reports to a `LegListener` (the call session) in
`gateway.voice.media`'s terms, and `Engine` is that module's `MediaEngine`: what the session and the
worker use of it, and all a fake engine needs to stand in for it in tests.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import errno
import gc
import logging
import re
import secrets
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pjsua2 as pj

from gateway.config import VoiceConfig
from gateway.errors import ConfigError
from gateway.ticket import mask_phone
from gateway.voice import sip_guard
from gateway.voice.framestats import GAPS_KEPT, FrameStats
from gateway.voice.media import LegListener, LegState, LiveTap, MediaError
from gateway.voice.sockets import udp_holders, udp_socket_fd

if TYPE_CHECKING:
    from gateway.voice import _pjnative

log = logging.getLogger("gateway.voice.pj")
pjsip_log = logging.getLogger("gateway.voice.pjsip")

_REQUEST_LINE = re.compile(r"^INVITE\s+(?P<uri>\S+)\s+SIP/2\.0", re.MULTILINE)
_URI_USER = re.compile(r"sips?:(?P<user>[^@;>\s]+)@")


def uri_user(uri: str) -> str:
    """The user part of a SIP URI (`"x" <sip:138@host>` -> `138`); '' when there is none."""
    match = _URI_USER.search(uri)
    return match["user"] if match else ""


def request_uri(whole_message: str) -> str:
    match = _REQUEST_LINE.search(whole_message)
    return match["uri"] if match else ""


_LEG_STATES = {
    pj.PJSIP_INV_STATE_EARLY: LegState.EARLY,
    pj.PJSIP_INV_STATE_CONFIRMED: LegState.CONFIRMED,
    pj.PJSIP_INV_STATE_DISCONNECTED: LegState.DISCONNECTED,
}


@contextlib.contextmanager
def media_errors(what: str) -> Iterator[None]:
    """pjsua2's own error, as the `MediaError` a session handles (its text: PJSIP's reason)."""
    try:
        yield
    except pj.Error as exc:
        raise MediaError(f"{what}: {exc.info()}") from None


class Leg(pj.Call):  # type: ignore[misc]
    """One call leg; its callbacks go to the listener, always on the loop thread.

    SIP callbacks run inside `libHandleEvents`, on the loop thread. A DTMF digit arrives on PJSIP's
    media thread (RTP): it is handed to the loop with `call_soon_threadsafe`. Any other callback
    that ever came from another thread is re-run on the loop the same way (it reads `getInfo()`,
    not its transient `prm`).
    """

    def __init__(self, account: pj.Account, call_id: int, engine: Engine) -> None:
        super().__init__(account, call_id)
        self.engine = engine
        self.listener: LegListener | None = None
        self.media: pj.AudioMedia | None = None
        self.disconnected = False
        self.label = ""

    def onCallState(self, prm: Any) -> None:
        if not self.engine.on_loop_thread():
            self.engine.hand_over(self.onCallState, None)
            return
        info = self.getInfo()
        if info.state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self.disconnected = True
            self.media = None
        if self.listener is not None:
            self.listener.on_state(self, _LEG_STATES.get(info.state, LegState.OTHER), info.lastStatusCode)
        if self.disconnected:
            self.engine.forget(self)

    def onCallMediaState(self, prm: Any) -> None:
        if not self.engine.on_loop_thread():
            self.engine.hand_over(self.onCallMediaState, None)
            return
        info = self.getInfo()
        for index, media in enumerate(info.media):
            if media.type == pj.PJMEDIA_TYPE_AUDIO and media.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                self.media = self.getAudioMedia(index)
                if self.listener is not None:
                    self.listener.on_media(self, self.media)
                return

    def onDtmfDigit(self, prm: Any) -> None:
        digit = str(prm.digit)
        if self.engine.on_loop_thread():
            self._digit(digit)
        else:
            self.engine.hand_over(self._digit, digit)

    def _digit(self, digit: str) -> None:
        if self.listener is not None and not self.disconnected:
            self.listener.on_digit(self, digit)

    def parties(self) -> tuple[str, str]:
        with media_errors("the leg's dialog"):  # its INVITE session may have ended already
            info = self.getInfo()
        return str(info.remoteUri), str(info.localUri)

    def accept(self, status: int = 200) -> None:
        """Answer (its retransmission timer is new: the poll loop looks again at once)."""
        param = pj.CallOpParam()
        param.statusCode = status
        self.answer(param)
        self.engine.kick()

    def hang_up(self, status: int = 200) -> None:
        if self.disconnected:
            return
        param = pj.CallOpParam()
        param.statusCode = status
        try:
            self.hangup(param)
        except pj.Error as exc:
            log.debug("hangup of %s: %s", self.label, exc.info())
        self.engine.kick()


class Prompt(pj.AudioMediaPlayer):  # type: ignore[misc]
    """A WAV player that reports its end of file on the loop (onEof2 runs on PJSIP's event-manager
    thread). Stop it with `Engine.stop_player`, never by dropping the last reference at once."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_end: Callable[[], None]) -> None:
        super().__init__()
        self._loop = loop
        self._on_end = on_end

    def onEof2(self) -> None:
        with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
            self._loop.call_soon_threadsafe(self._on_end)


PJSIP_LOG_BURST = 20  # PJSIP lines logged per window at most; the rest are counted
PJSIP_LOG_WINDOW = 10.0  # seconds
_NUMBER = re.compile(r"\+?\d{7,}")  # a run of digits long enough to be a phone number


class PjsipLog(pj.LogWriter):  # type: ignore[misc]
    """PJSIP's own log lines, into Python logging (`gateway.voice.pjsip`).

    Only the first line of each: after it, PJSIP dumps a packet it could not process whole, callers'
    numbers in From and To included (seen with a fuzz: every malformed request went to the log).
    Numbers are masked (`gateway.ticket.mask_phone`), and at most PJSIP_LOG_BURST lines go out per
    PJSIP_LOG_WINDOW seconds: a flood of bad packets does not become a flood of log lines (what was
    held back is counted in the next line let through). PJSIP logs from whichever of its threads has
    something to say, at level 1 (errors) only: rare, so Python on those threads costs nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self._levels = {1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO}  # PJSIP's, 4 and up debug
        self._lock = threading.Lock()
        self._window_start = 0.0
        self._in_window = 0
        self._held_back = 0
        self._kept: list[tuple[int, str]] | None = None  # while `keep()` holds lines back...
        self._keeper = 0  # ...those of this thread (the one that called into PJSIP)

    @contextlib.contextmanager
    def keep(self) -> Iterator[list[tuple[int, str]]]:
        """Hold PJSIP's lines back while a call into it runs (the loop thread's own): the caller may
        explain the failure in one line of its own and drop them, or `emit` them."""
        kept: list[tuple[int, str]] = []
        self._keeper, self._kept = threading.get_ident(), kept
        try:
            yield kept
        finally:
            self._kept = None

    def emit(self, kept: list[tuple[int, str]]) -> None:
        for level, text in kept:
            pjsip_log.log(level, "%s", text)

    def write(self, entry: Any) -> None:
        first = str(entry.msg).split("\n", 1)[0].strip()
        text = _NUMBER.sub(lambda match: mask_phone(match[0]), first)
        level = self._levels.get(int(entry.level), logging.DEBUG)
        kept = self._kept
        if kept is not None and threading.get_ident() == self._keeper:
            kept.append((level, text))
            return
        with self._lock:
            now = time.monotonic()
            if now - self._window_start >= PJSIP_LOG_WINDOW:
                self._window_start, self._in_window = now, 0
            if self._in_window >= PJSIP_LOG_BURST:
                self._held_back += 1
                return
            self._in_window += 1
            held_back, self._held_back = self._held_back, 0
        more = f" ({held_back} more PJSIP line(s) held back before this one)" if held_back else ""
        pjsip_log.log(level, "%s%s", text, more)


def _vector_bytes_slow(vector: Any) -> bytes:
    return bytes(vector)  # SWIG iterates the std::vector element by element: ~200 us per frame


def _vector_bytes_fast(vector: Any) -> bytes:
    """Read a `std::vector<unsigned char>` through its (begin, end) pointers: ~1 us per frame.

    SWIG offers no buffer for `pj.ByteVector`; iterating it cost 1 % of a core per call (measured
    with perf: the bridge thread spent most of its time in the interpreter). libstdc++ lays a vector
    out as three pointers (begin, end, end of storage); `vector_bytes` checks that layout once
    against the slow path before trusting it.
    """
    address = int(vector.this)
    begin = ctypes.c_void_p.from_address(address).value or 0
    end = ctypes.c_void_p.from_address(address + ctypes.sizeof(ctypes.c_void_p)).value or 0
    return ctypes.string_at(begin, end - begin) if end > begin else b""


def _pick_vector_bytes() -> Callable[[Any], bytes]:
    probe = pj.ByteVector()
    for value in range(320):
        probe.push_back((value * 7) % 256)
    try:
        if _vector_bytes_fast(probe) == _vector_bytes_slow(probe) and _vector_bytes_fast(pj.ByteVector()) == b"":
            return _vector_bytes_fast
    except (AttributeError, TypeError, ValueError, OSError):
        pass
    log.warning("pj.ByteVector layout not recognised; live audio frames are copied the slow way")
    return _vector_bytes_slow


vector_bytes = _pick_vector_bytes()

SIP_SERVER_ERROR = 500
FRAME_USEC = 20_000  # live-audio frames: the bridge's own 20 ms
PLAYER_GRACE_SECONDS = 1.0  # a stopped player lives this long (see Engine.stop_player)
# Players waiting out their grace count against the wheel's PJSUA_MAX_PLAYERS (32): past this many,
# the oldest goes early (it has had the most time for a queued end of file to be delivered).
MAX_RETIRED_PLAYERS = 16
SHUTDOWN_PLAYER_GRACE_SECONDS = 0.2  # at shutdown, the last one stopped lives at least this long
# The media poller's cadence with no leg; a leg's arrival switches it to media_poll_ms at once. Not
# slower: once, at 1 s, the first calls to idle workers were answered up to 1.2 s late (a 100-worker
# run; not reproduced since, cause not found); 10 wake-ups a second cost an idle worker ~0.04 %.
IDLE_MEDIA_POLL_MS = 100
GUARD_CALIBRATION_SECONDS = 2.0  # the SIP guard's probe to itself arrives in well under a millisecond

_thread = threading.local()


def keep_thread_state() -> None:
    """Keep the calling PJSIP thread's Python thread state from one callback to the next.

    SWIG's director calls `PyGILState_Ensure`/`Release` around each callback; on a thread Python did
    not create, the release at depth 0 deletes the thread state, so every 20 ms frame built a new
    one (mmap + munmap of its frame stack, page faults: measured with perf as the bulk of the bridge
    thread's kernel time). One Ensure that is never released pins it for the thread's life.
    """
    if getattr(_thread, "pinned", False):
        return
    ctypes.pythonapi.PyGILState_Ensure.restype = ctypes.c_int
    ctypes.pythonapi.PyGILState_Ensure()
    _thread.pinned = True


class LiveAudio(pj.AudioMediaPort):  # type: ignore[misc]
    """The caller's PCM frames, handed off the bridge thread into a bounded ring.

    `onFrameReceived` copies the frame (the only conversion SWIG offers) and appends it to a deque
    with `maxlen`: appending never blocks, and when the consumer falls behind the oldest frames are
    dropped and counted, so the bridge is never stalled by Python.
    """

    def __init__(self, max_frames: int) -> None:
        super().__init__()
        self.ring: collections.deque[tuple[float, bytes]] = collections.deque(maxlen=max_frames)
        self.stats = FrameStats()
        self._last = 0.0
        self._lock = threading.Lock()

    def onFrameReceived(self, frame: Any) -> None:
        keep_thread_state()
        if frame.type != pj.PJMEDIA_FRAME_TYPE_AUDIO or frame.size == 0:
            return
        now = time.monotonic()
        data = vector_bytes(frame.buf)
        stats = self.stats
        if self._last:
            gap = now - self._last
            stats.gaps.append(gap)
            stats.max_gap = max(stats.max_gap, gap)
        self._last = now
        if len(self.ring) == self.ring.maxlen:
            stats.dropped += 1
        self.ring.append((now, data))
        stats.frames += 1

    def listen(self, source: pj.AudioMedia) -> None:
        """Hear `source` (again, after a re-INVITE moved its stream)."""
        source.startTransmit(self)

    def drain(self) -> list[tuple[float, bytes]]:
        frames = []
        while self.ring:
            try:
                frames.append(self.ring.popleft())
            except IndexError:
                break
        return frames


class NativeLiveAudio:
    """The caller's PCM frames through `gateway.voice._pjnative` (C): `LiveAudio`'s interface, with no
    Python on the bridge thread. The ring is `max_frames` deep; when the consumer falls behind the
    oldest frames are dropped and counted, as in `LiveAudio`."""

    def __init__(self, port: _pjnative.LivePort) -> None:
        self._port = port

    def listen(self, source: pj.AudioMedia) -> None:
        """Hear `source` (again, after a re-INVITE moved its stream)."""
        self._port.listen(source.getPortId())

    def drain(self) -> list[tuple[float, bytes]]:
        return self._port.drain()

    @property
    def stats(self) -> FrameStats:
        frames, dropped, max_gap, gaps = self._port.stats()
        return FrameStats(frames, dropped, max_gap, collections.deque(gaps or (), maxlen=GAPS_KEPT))

    def close(self) -> None:
        self._port.close()


def bind_native_ports() -> ModuleType | None:
    """The `_pjnative` module bound to the loaded pjsua2 library, or None (with the reason logged):
    not built, or the library's layout not the one it measured."""
    try:
        from gateway.voice import _pjnative

        _pjnative.bind(str(sys.modules["pjsua2._pjsua2"].__file__))
    except (ImportError, KeyError, RuntimeError) as exc:
        log.warning(
            "no C helpers: live audio through the Python port, PJSIP polled every poll_interval, "
            "RTP read by PJSIP's own media thread (more CPU per worker), no SIP guard: %s",
            exc,
        )
        return None
    return _pjnative


class InboundAccount(pj.Account):  # type: ignore[misc]
    def __init__(self, engine: Engine) -> None:
        super().__init__()
        self.engine = engine

    def onIncomingCall(self, prm: Any) -> None:
        leg = Leg(self, prm.callId, self.engine)
        self.engine.keep(leg)  # from now on: a Leg dropped would hang up with 603
        self.engine.incoming(leg, request_uri(prm.rdata.wholeMsg))


PJ_ERRNO_START_SYS = 120000  # PJSIP's status for an OS error is this plus errno (pj/errno.h)


def address_in_use(host: str, port: int) -> str:
    """Why the SIP port cannot be had, for the one line a worker exits with (exit 2: a supervisor
    does not start it again; it would only fail the same way)."""
    holders = udp_holders(port)
    who = ", ".join(f"pid {pid} ({name})" for pid, name in holders) if holders else "a process this one cannot see"
    return f"SIP address {host}:{port} (UDP) is already in use by {who}"


@dataclass(frozen=True)
class EngineSettings:
    """The endpoint's settings, derived from `[voice]` (`from_voice`): declared there, once."""

    host: str
    port: int
    max_calls: int
    poll_interval: float
    idle_poll_interval: float
    rtp_port: int  # the first RTP port this worker binds; RTP/RTCP pairs from here
    rtp_port_range: int  # ports it may use from rtp_port: its own block, disjoint from other workers'
    native_live_audio: bool  # live audio through the C port (gateway/voice/_pjnative.c) when it is bound
    media_poll_ms: int  # RTP read every this many ms while calls are up (C poller); 0: PJSIP's media thread
    # Not settings: what the gateway's audio is (G.711 narrowband, mono) and how much PJSIP says.
    clock_rate: int = 8000
    log_level: int = 1
    public_address: str = ""

    @classmethod
    def from_voice(cls, voice: VoiceConfig, host: str, port: int) -> EngineSettings:
        """The engine of the worker listening on `host:port`: its own RTP block (`rtp_ports`)."""
        rtp_port, rtp_port_range = voice.rtp_ports(port)
        return cls(
            host=host,
            port=port,
            max_calls=voice.calls_per_worker,
            poll_interval=voice.poll_interval,
            idle_poll_interval=voice.idle_poll_interval,
            rtp_port=rtp_port,
            rtp_port_range=rtp_port_range,
            native_live_audio=voice.native_live_audio,
            media_poll_ms=voice.media_poll_ms,
        )


class Engine:
    """The endpoint and its bookkeeping; every method runs on the loop thread."""

    def __init__(self, settings: EngineSettings, on_incoming: Callable[[Leg, str], None]) -> None:
        self.settings = settings
        self.on_incoming = on_incoming
        self.endpoint = pj.Endpoint()
        self.account: InboundAccount | None = None
        self.legs: dict[int, Leg] = {}
        self._poller: asyncio.Task[None] | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self._sip_fd: int | None = None
        self._nap: asyncio.Future[None] | None = None
        self._loop_thread = threading.get_ident()
        self._native: ModuleType | None = None  # the bound _pjnative module, when live audio goes through C
        self._timers_known = False  # _pjnative.next_timer() tells when PJSIP's next SIP timer is due
        self._retired_players: collections.deque[tuple[float, Prompt]] = collections.deque()
        self._media_poller = False  # RTP read by _pjnative's poller instead of PJSIP's media thread
        self.sip_guarded = False  # malformed requests answered by _pjnative's SIP guard
        self._pjsip_log = PjsipLog()  # kept for the process's life: PJSIP may log until libDestroy ends

    @property
    def native_live_audio(self) -> bool:
        return self._native is not None and self.settings.native_live_audio

    def on_loop_thread(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def hand_over(self, callback: Callable[[Any], None], argument: Any) -> None:
        """Run `callback(argument)` on the loop thread (from a PJSIP thread)."""
        assert self.loop is not None
        with contextlib.suppress(RuntimeError):  # loop already closed at shutdown
            self.loop.call_soon_threadsafe(callback, argument)

    def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        cfg = pj.EpConfig()
        # No PJSIP worker thread: SIP is handled inside libHandleEvents on this thread. Callbacks
        # are not funnelled through pjsua's main-thread queue (mainThreadOnly): that queue is only
        # drained by polling, and polling every 10-20 ms cost each worker ~0.4 % of a core. DTMF
        # comes on the media thread instead and is handed over (Leg.onDtmfDigit).
        cfg.uaConfig.threadCnt = 0
        cfg.uaConfig.mainThreadOnly = False
        cfg.uaConfig.maxCalls = self.settings.max_calls
        cfg.uaConfig.userAgent = "hotline-gateway"
        cfg.medConfig.clockRate = self.settings.clock_rate
        cfg.medConfig.sndClockRate = self.settings.clock_rate
        cfg.medConfig.channelCount = 1
        cfg.logConfig.level = self.settings.log_level
        cfg.logConfig.consoleLevel = self.settings.log_level
        cfg.logConfig.writer = self._pjsip_log  # instead of stdout: first lines only, numbers masked
        cfg.logConfig.decor = pj.PJ_LOG_HAS_SENDER
        self.endpoint.libCreate()
        self.endpoint.libInit(cfg)
        transport = pj.TransportConfig()
        transport.port = self.settings.port
        transport.boundAddress = self.settings.host
        if self.settings.public_address:
            transport.publicAddress = self.settings.public_address
        with self._pjsip_log.keep() as pjsip_said:
            try:
                self.endpoint.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
            except pj.Error as exc:
                if exc.status == PJ_ERRNO_START_SYS + errno.EADDRINUSE:
                    # One line says it (with who holds the port), not PJSIP's two besides.
                    raise ConfigError(address_in_use(self.settings.host, self.settings.port)) from None
                self._pjsip_log.emit(pjsip_said)
                raise
        self._pjsip_log.emit(pjsip_said)
        self.endpoint.libStart()
        self.endpoint.audDevManager().setNullDev()
        self._native = bind_native_ports()
        self._timers_known = self._know_timers()
        self._media_poller = self._start_media_poller()
        self.sip_guarded = self._start_sip_guard()
        account_cfg = pj.AccountConfig()
        account_cfg.idUri = f"sip:gateway@{self.settings.host}:{self.settings.port}"
        # RTP on the worker's own address (and that address in the SDP), not the host's main one:
        # worker groups on other addresses or hosts must be reachable where they say they are.
        account_cfg.mediaConfig.transportConfig.boundAddress = self.settings.host
        # Its own port block: pjsua's default scan from 4000 gives up after 100 pairs, which 100
        # workers on one address exhaust (measured: "Unable to find appropriate RTP/RTCP ports").
        account_cfg.mediaConfig.transportConfig.port = self.settings.rtp_port
        account_cfg.mediaConfig.transportConfig.portRange = self.settings.rtp_port_range
        if self.settings.public_address:
            account_cfg.mediaConfig.transportConfig.publicAddress = self.settings.public_address
        self.account = InboundAccount(self)
        self.account.create(account_cfg)
        self._watch_sip_socket()
        self._poller = asyncio.create_task(self._poll(), name="pjsip-poll")

    def _know_timers(self) -> bool:
        """Check, once, that `_pjnative` reads PJSIP's timer heap right (against PJSIP's own reader,
        with a timer of ours in it, before any call). Then the poll loop sleeps until PJSIP's next
        timer instead of polling every `poll_interval`."""
        if self._native is None:
            return False
        token = self.endpoint.utilTimerSchedule(60_000, None)
        try:
            self._native.check_timers()
        except RuntimeError as exc:
            log.warning("polling PJSIP every %.3f s: %s", self.settings.poll_interval, exc)
            return False
        finally:
            self.endpoint.utilTimerCancel(token)
        return True

    def _start_media_poller(self) -> bool:
        """Replace PJSIP's media thread (a wake-up per RTP packet, and 100 a second with no call)
        with `_pjnative`'s poller: every `media_poll_ms` while there are legs, once a second without."""
        if self._native is None or self.settings.media_poll_ms <= 0:
            return False
        self._native.media_poll_start(IDLE_MEDIA_POLL_MS)  # RuntimeError if RTP could not be read: no worker
        return True

    def _start_sip_guard(self) -> bool:
        """Requests PJSIP's parser takes but RFC 3261 refuses (gateway/voice/sip_guard.py) are answered
        400 before PJSIP acts on them. The C module first learns where PJSIP keeps a request's bytes
        from a probe the worker sends itself; without that, requests reach PJSIP unchecked."""
        if self._native is None:
            return False
        address = "127.0.0.1" if self.settings.host in ("", "0.0.0.0") else self.settings.host
        # A letter first: random hex alone may begin with eleven digits, a mobile number to a log reader.
        probe = sip_guard.probe_request(address, self.settings.port, "p" + secrets.token_hex(8))
        try:
            self._native.sip_guard_start(sip_guard.verdict, probe)
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
                sender.sendto(probe, (address, self.settings.port))
            deadline = time.monotonic() + GUARD_CALIBRATION_SECONDS
            while not self._native.sip_guard_stats()["calibrated"] and time.monotonic() < deadline:
                self.endpoint.libHandleEvents(10)
            if not self._native.sip_guard_stats()["calibrated"]:
                self._native.sip_guard_stop()
                raise RuntimeError(f"its probe request did not arrive within {GUARD_CALIBRATION_SECONDS:.0f} s")
        except (RuntimeError, OSError) as exc:
            log.warning("no SIP guard: malformed requests (RFC 4475 clerr, mismatch01) reach PJSIP: %s", exc)
            return False
        return True

    def _media_cadence(self) -> None:
        if self._media_poller and self._native is not None:
            self._native.media_poll_cadence(self.settings.media_poll_ms if self.legs else IDLE_MEDIA_POLL_MS)

    def kick(self) -> None:
        """Poll PJSIP on the next loop turn: a call into it may have scheduled a timer sooner than
        the poll loop's nap (an answer's retransmissions, a BYE's transaction, an INVITE)."""
        self._wake()

    def _watch_sip_socket(self) -> None:
        """Wake the poll loop when a SIP message arrives, so an idle worker can poll slowly."""
        assert self.loop is not None
        self._sip_fd = udp_socket_fd(self.settings.port)
        if self._sip_fd is None:
            log.info("SIP socket not found in /proc; polling every %.3f s even when idle", self.settings.poll_interval)
            return
        self.loop.add_reader(self._sip_fd, self._wake)

    def _wake(self) -> None:
        if self._nap is not None and not self._nap.done():
            self._nap.set_result(None)

    def _poll_interval(self) -> float:
        """How long the poll loop naps. SIP messages wake it at once (the socket), DTMF and prompt
        ends are handed over from PJSIP's threads, calls into PJSIP kick it: the nap only waits for
        PJSIP's timers (retransmissions, transaction timeouts). When `_pjnative` can read the timer
        heap, the nap ends when the next one is due, and `idle_poll_interval` only bounds how late a
        timer scheduled by one of PJSIP's own threads runs; otherwise the loop polls every
        `poll_interval` while calls are up."""
        if self._sip_fd is None:
            return self.settings.poll_interval  # SIP messages are only seen by polling
        if not self._timers_known or self._native is None:
            return self.settings.poll_interval if self.legs else self.settings.idle_poll_interval
        due: float | None = self._native.next_timer()
        longest = self.settings.idle_poll_interval
        return longest if due is None else min(longest, due)

    async def _poll(self) -> None:
        assert self.loop is not None
        while True:
            self.endpoint.libHandleEvents(0)
            if self._native is not None:
                self._native.reap()  # C live-audio ports PJSIP has let go of
            self._release_players()
            self._nap = self.loop.create_future()
            timer = self.loop.call_later(self._poll_interval(), self._wake)
            try:
                await self._nap
            finally:
                timer.cancel()
                self._nap = None

    def incoming(self, leg: Leg, uri: str) -> None:
        """A new incoming leg, from inside pjsua2's `onIncomingCall`: the worker decides on the next
        loop turn, never inside the callback.

        pjsua2 2.15.1 (`pj::Endpoint::on_incoming_call`) frees its copy of the INVITE after the
        callback returns, with no NULL check. A call ended inside the callback has already been
        reset and that copy freed when the INVITE carried no offer (no body, or a body without
        Content-Type): the worker aborted in `pjsip_rx_data_free_cloned` on every refusal (503 when
        full, 404 for an unknown number) of such an INVITE. Answered or refused a loop turn later,
        the copy is gone with the callback, and pjsua has already sent 100 Trying (no
        retransmission waits on us). docs/voice.md, "Refusing a call"."""
        assert self.loop is not None
        self.loop.call_soon(self._decide, leg, uri)

    def _decide(self, leg: Leg, uri: str) -> None:
        if leg.disconnected:
            return  # CANCELled in the same poll
        try:
            self.on_incoming(leg, uri)
        except Exception:
            # Fail closed: a call the worker could not take is refused, never left ringing.
            log.exception("incoming call refused: the worker failed to take it")
            leg.hang_up(SIP_SERVER_ERROR)

    def keep(self, leg: Leg) -> None:
        self.legs[leg.getId()] = leg
        self._media_cadence()  # before the answer: the caller's RTP is read from its first packet

    def forget(self, leg: Leg) -> None:
        for key, value in list(self.legs.items()):
            if value is leg:
                del self.legs[key]
        self._media_cadence()

    @property
    def active_legs(self) -> int:
        return sum(1 for leg in self.legs.values() if not leg.disconnected)

    def dial(self, uri: str, listener: LegListener, label: str) -> Leg:
        assert self.account is not None
        leg = Leg(self.account, pj.PJSUA_INVALID_ID, self)
        leg.listener = listener
        leg.label = label
        param = pj.CallOpParam(True)
        with media_errors("dial"):
            leg.makeCall(uri, param)
        self.keep(leg)
        self.kick()
        return leg

    def play(self, path: Path, target: pj.AudioMedia, on_end: Callable[[], None]) -> Prompt:
        assert self.loop is not None
        player = Prompt(self.loop, on_end)
        with media_errors("play"):
            player.createPlayer(str(path), pj.PJMEDIA_FILE_NO_LOOP)
            player.startTransmit(target)
        return player

    @staticmethod
    def connect(source: Any, sink: Any) -> None:
        with media_errors("connect"):
            source.startTransmit(sink)

    def stop_player(self, player: Prompt, target: pj.AudioMedia | None) -> None:
        """Stop a prompt; the player object itself is kept `PLAYER_GRACE_SECONDS` longer.

        PJSIP 2.15 delivers a player's end of file as an event on its event-manager thread
        (`file_on_event`). A player destroyed while such an event is queued is called after it is
        gone: the worker dies with SIGSEGV (seen once in a 200-call run; a churn test reproduces it
        within seconds). Once it is disconnected no new end of file can come, so a player kept a
        while after stopping has had any queued event delivered (and ignored: `Prompt`'s callback
        only reports the prompt still playing)."""
        if target is not None:
            with contextlib.suppress(pj.Error):
                player.stopTransmit(target)
        self._retired_players.append((time.monotonic(), player))
        self._release_players()

    def _release_players(self, everything: bool = False) -> None:
        """Destroy the stopped players whose grace has passed (all of them at shutdown)."""
        now = time.monotonic()
        retired = self._retired_players
        while retired and (
            everything or len(retired) > MAX_RETIRED_PLAYERS or now - retired[0][0] >= PLAYER_GRACE_SECONDS
        ):
            retired.popleft()

    @staticmethod
    def record(path: Path, source: pj.AudioMedia) -> pj.AudioMediaRecorder:
        path.parent.mkdir(parents=True, exist_ok=True)
        recorder = pj.AudioMediaRecorder()
        with media_errors("record"):
            recorder.createRecorder(str(path))
            source.startTransmit(recorder)
        return recorder

    def live_audio(self, source: pj.AudioMedia, name: str, max_frames: int) -> LiveAudio | NativeLiveAudio:
        with media_errors("live audio"):
            return self._live_audio(source, name, max_frames)

    def _live_audio(self, source: pj.AudioMedia, name: str, max_frames: int) -> LiveAudio | NativeLiveAudio:
        if self._native is not None and self.settings.native_live_audio:
            native = NativeLiveAudio(self._native.LivePort(name, self.settings.clock_rate, FRAME_USEC, max_frames))
            native.listen(source)
            return native
        port = LiveAudio(max_frames)
        fmt = pj.MediaFormatAudio()
        fmt.type = pj.PJMEDIA_TYPE_AUDIO
        fmt.clockRate = self.settings.clock_rate  # never 0: PJSIP aborts on a zero rate
        fmt.channelCount = 1
        fmt.bitsPerSample = 16
        fmt.frameTimeUsec = FRAME_USEC
        port.createPort(name, fmt)
        port.listen(source)
        return port

    @staticmethod
    def destroy_port(port: LiveTap) -> None:
        """Take a live-audio port out of the bridge; its stats stay readable.

        A SWIG port's C++ side goes first, while we still hold the Python object (teardown race); a
        C port leaves the bridge now and its memory goes once PJSIP has let go (`reap`)."""
        if isinstance(port, NativeLiveAudio):
            port.close()
        elif isinstance(port, LiveAudio):
            port.__swig_destroy__(port)

    async def shutdown(self, timeout: float = 5.0) -> None:
        """Hang up every leg, wait for the BYEs to complete, then destroy the library."""
        with contextlib.suppress(pj.Error):
            self.endpoint.hangupAllCalls()
        deadline = time.monotonic() + timeout
        while self.active_legs and time.monotonic() < deadline:
            self.endpoint.libHandleEvents(10)
            await asyncio.sleep(0)
        if self._sip_fd is not None and self.loop is not None:
            self.loop.remove_reader(self._sip_fd)
            self._sip_fd = None
        if self._poller is not None:
            self._poller.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._poller
        self.legs.clear()
        self.account = None
        # Stopped players go before libDestroy (they would abort it), but not the instant they were
        # stopped: an end-of-file event queued just before may still be on its way (stop_player).
        if self._retired_players:
            settle = self._retired_players[-1][0] + SHUTDOWN_PLAYER_GRACE_SECONDS
            while time.monotonic() < settle:
                self.endpoint.libHandleEvents(10)
        self._release_players(everything=True)
        # Any pjsua2 object still alive in a reference cycle must go now: after libDestroy its
        # destructor would call into a destroyed library and abort the process.
        gc.collect()
        if self.sip_guarded and self._native is not None:
            self._native.sip_guard_stop()  # it holds a Python callable: out before libDestroy
            self.sip_guarded = False
        if self._media_poller and self._native is not None:
            self._native.media_poll_stop()  # before libDestroy destroys the ioqueue it polls
            self._media_poller = False
        self.endpoint.libDestroy()
        if self._native is not None:
            self._native.reap(library_gone=True)
