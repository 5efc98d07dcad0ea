"""Drives gateway.voice._pjnative against the real pjsua2 library, in a process of its own (a PJSIP
assertion aborts the process: the test then sees an exit status, not a dead pytest).

`python pjnative_probe.py SCENARIO WAV` prints one JSON object; tests/voice/test_pjnative.py asserts.
"""

from __future__ import annotations

import base64
import json
import sys
import threading
import time
from typing import Any

import pjsua2 as pj

from gateway.voice.engine import FRAME_USEC, LiveAudio, NativeLiveAudio, bind_native_ports

RATE = 8000


def endpoint() -> pj.Endpoint:
    ep = pj.Endpoint()
    ep.libCreate()
    cfg = pj.EpConfig()
    cfg.uaConfig.threadCnt = 0
    cfg.uaConfig.mainThreadOnly = False
    cfg.medConfig.clockRate = RATE
    cfg.medConfig.sndClockRate = RATE
    cfg.medConfig.channelCount = 1
    cfg.logConfig.level = 0
    cfg.logConfig.consoleLevel = 0
    ep.libInit(cfg)
    ep.libStart()
    ep.audDevManager().setNullDev()
    return ep


def run_for(ep: pj.Endpoint, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ep.libHandleEvents(10)


def player(wav: str) -> pj.AudioMediaPlayer:
    p = pj.AudioMediaPlayer()
    p.createPlayer(wav, pj.PJMEDIA_FILE_NO_LOOP)
    return p


def swig_port(source: pj.AudioMedia, frames: int) -> LiveAudio:
    port = LiveAudio(frames)
    fmt = pj.MediaFormatAudio()
    fmt.type = pj.PJMEDIA_TYPE_AUDIO
    fmt.clockRate = RATE
    fmt.channelCount = 1
    fmt.bitsPerSample = 16
    fmt.frameTimeUsec = FRAME_USEC
    port.createPort("swig", fmt)
    port.listen(source)
    return port


def content(ep: pj.Endpoint, native: Any, wav: str) -> dict[str, Any]:
    """A player heard by a C port and a SWIG port at once, drained every 100 ms for 1.5 s."""
    source = player(wav)
    c_port = NativeLiveAudio(native.LivePort("c", RATE, FRAME_USEC, 250))
    py_port = swig_port(source, 250)
    c_port.listen(source)
    c_frames: list[tuple[float, bytes]] = []
    py_frames: list[tuple[float, bytes]] = []
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        run_for(ep, 0.1)
        c_frames += c_port.drain()
        py_frames += py_port.drain()
    stats = c_port.stats
    c_port.close()
    py_port.__swig_destroy__(py_port)
    del source
    return {
        "c_pcm": base64.b64encode(b"".join(d for _, d in c_frames)).decode(),
        "py_pcm": base64.b64encode(b"".join(d for _, d in py_frames)).decode(),
        "c_sizes": sorted({len(d) for _, d in c_frames}),
        "c_stamps": [t for t, _ in c_frames],
        "now": time.monotonic(),
        "frames": stats.frames,
        "dropped": stats.dropped,
        "gaps": list(stats.gaps),
        "max_gap": stats.max_gap,
    }


def bounded(ep: pj.Endpoint, native: Any, wav: str) -> dict[str, Any]:
    """Nobody drains a 10-frame ring for a second."""
    source = player(wav)
    port = native.LivePort("bounded", RATE, FRAME_USEC, 10)
    port.listen(source.getPortId())
    run_for(ep, 1.0)
    drained = port.drain()
    frames, dropped, _, _ = port.stats()
    port.close()
    del source
    return {"drained": len(drained), "frames": frames, "dropped": dropped, "again": len(port.drain())}


def lifecycle(ep: pj.Endpoint, native: Any, wav: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    source = player(wav)
    ports = [native.LivePort(f"p{i}", RATE, FRAME_USEC, 50) for i in range(3)]
    for port in ports:
        port.listen(source.getPortId())
    run_for(ep, 0.3)
    out["slots"] = [port.slot for port in ports]
    for port in ports:
        port.close()
    out["pending_at_close"] = native.reap()
    pending = []
    for _ in range(15):
        run_for(ep, 0.1)
        pending.append(native.reap())
    out["pending_later"] = pending
    out["slot_after_close"] = ports[0].slot
    out["stats_after_close"] = list(ports[0].stats()[:2])
    out["drain_after_close"] = len(ports[0].drain())
    try:
        ports[0].listen(source.getPortId())
    except RuntimeError as exc:
        out["listen_after_close"] = str(exc)
    for args in [("x", 100, FRAME_USEC, 10), ("x", RATE, FRAME_USEC, 0), ("x", RATE, 1, 10)]:
        try:
            native.LivePort(*args)
        except ValueError as exc:
            out.setdefault("bad_args", []).append(str(exc))
    errors: list[str] = []

    def elsewhere() -> None:
        try:
            native.LivePort("thread", RATE, FRAME_USEC, 10)
        except RuntimeError as exc:
            errors.append(str(exc))

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    out["other_thread"] = errors
    # A port dropped without close() stays in the bridge until the library goes.
    dropped = native.LivePort("dropped", RATE, FRAME_USEC, 10)
    dropped.listen(source.getPortId())
    del dropped
    run_for(ep, 0.2)
    out["pending_with_a_dropped_port"] = native.reap()
    del source
    ep.libDestroy()
    out["pending_after_destroy"] = native.reap(library_gone=True)
    return out


def timers(ep: pj.Endpoint, native: Any, wav: str) -> dict[str, Any]:
    """The timer heap reader: refused before it is checked, then what PJSIP scheduled."""
    out: dict[str, Any] = {}
    try:
        native.next_timer()
    except RuntimeError as exc:
        out["before_check"] = str(exc)
    out["pjsip_own_timer"] = None
    try:
        native.check_timers()  # PJSIP's own timers, if any, are enough to compare against
        out["pjsip_own_timer"] = native.next_timer()
    except RuntimeError as exc:
        out["check_without_a_timer"] = str(exc)
    token = ep.utilTimerSchedule(30_000, None)
    native.check_timers()
    out["with_30s_timer"] = native.next_timer()
    soon = ep.utilTimerSchedule(1_500, None)
    out["with_1500ms_timer"] = native.next_timer()
    run_for(ep, 0.5)
    out["half_a_second_later"] = native.next_timer()
    ep.utilTimerCancel(soon)
    out["after_cancel"] = native.next_timer()
    ep.utilTimerCancel(token)
    out["without_ours"] = native.next_timer()
    return out


def media_poll(ep: pj.Endpoint, native: Any, wav: str) -> dict[str, Any]:
    """The poller that replaces PJSIP's media thread: its cadence set, a change waking it, stopping.

    No wall-clock counts (they failed on a loaded machine; the figures belong to the benchmarks): the
    cadence starts at 5 s, so a poll soon after the change to 20 ms can only come from the wake-up.
    """
    import os

    def threads() -> list[str]:
        return sorted(open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task"))

    def polls_reach(count: int, within: float) -> bool:
        deadline = time.monotonic() + within
        while native.media_poll_stats()["polls"] < count and time.monotonic() < deadline:
            time.sleep(0.001)
        return bool(native.media_poll_stats()["polls"] >= count)

    # PJSIP's media thread names itself once it first runs: on a loaded machine, after libStart
    # returned. Wait (bounded) for the name rather than read the list too early.
    deadline = time.monotonic() + 10.0
    while "media" not in threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    out: dict[str, Any] = {"threads_before": threads()}
    native.media_poll_start(5000)
    try:
        native.media_poll_start(20)
    except RuntimeError as exc:
        out["second_start"] = str(exc)
    out["first_poll"] = polls_reach(1, 2.5)  # the poller polls once as it starts, then waits 5 s
    out["threads_running"] = threads()
    out["cadence_at_start"] = native.media_poll_stats()["cadence_ms"]
    polls = native.media_poll_stats()["polls"]
    out["running"] = native.media_poll_cadence(20)  # True: the poller runs and took the change
    out["cadence_after_change"] = native.media_poll_stats()["cadence_ms"]
    out["woken_before_the_old_cadence"] = polls_reach(polls + 1, 2.5)  # half of the 5 s it waited on
    polls = native.media_poll_stats()["polls"]
    out["keeps_polling"] = polls_reach(polls + 5, 2.5)  # 5 turns of 20 ms, with room for a loaded machine
    for bad in (0, 6000):
        try:
            native.media_poll_cadence(bad)
        except ValueError as exc:
            out.setdefault("bad_cadence", []).append(str(exc))
    native.media_poll_stop()
    out["stats_after_stop"] = native.media_poll_stats()
    out["cadence_after_stop"] = native.media_poll_cadence(20)
    out["threads_after_stop"] = threads()
    return out


def sip_guard(ep: pj.Endpoint, native: Any, wav: str) -> dict[str, Any]:
    """The SIP guard module on a UDP transport: calibrated by its probe, then each request's bytes go
    to the check, whose verdict PJSIP never overrides."""
    import socket

    from gateway.voice.sip_guard import probe_request

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    transport = pj.TransportConfig()
    transport.port = port
    transport.boundAddress = "127.0.0.1"
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, transport)
    client = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    client.bind(("127.0.0.1", 0))
    client.setblocking(False)
    via = f"127.0.0.1:{client.getsockname()[1]}"
    checked: list[bytes] = []

    def check(message: bytes) -> tuple[int, str] | None:
        checked.append(message)
        if b"X-Verdict: refuse" in message:
            return (400, "Bad Request (probe)")
        if b"X-Verdict: raise" in message:
            raise ValueError("a check that breaks")
        return None

    def options(n: int, extra: str = "", method: str = "OPTIONS") -> bytes:
        return (
            f"{method} sip:x@127.0.0.1:{port} SIP/2.0\r\nVia: SIP/2.0/UDP {via};branch=z9hG4bK-g{n}\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:a@{via}>;tag=g{n}\r\nTo: <sip:x@127.0.0.1>\r\n"
            f"Call-ID: guard-{n}\r\nCSeq: 1 {method}\r\n{extra}Content-Length: 0\r\n\r\n"
        ).encode()

    def answer(message: bytes) -> str | None:
        """The status line PJSIP sent back, or None within half a second of polling."""
        client.sendto(message, ("127.0.0.1", port))
        deadline = time.monotonic() + 0.5
        while time.monotonic() < deadline:
            ep.libHandleEvents(10)
            try:
                return client.recv(65536).decode().split("\r\n", 1)[0]
            except BlockingIOError:
                continue
        return None

    out: dict[str, Any] = {}
    try:
        native.sip_guard_stats()
        native.sip_guard_start(check, b"short")
    except ValueError as exc:
        out["bad_probe"] = str(exc)
    probe = probe_request("127.0.0.1", port, "feedc0de")
    native.sip_guard_start(check, probe)
    try:
        native.sip_guard_start(check, probe)
    except RuntimeError as exc:
        out["second_start"] = str(exc)
    out["before_calibration"] = answer(options(1))  # not the probe: passed on unchecked
    out["probe_answered"] = answer(probe)  # the module takes its probe: nobody answers it
    out["calibrated"] = native.sip_guard_stats()
    out["passed"] = answer(options(2))
    out["refused"] = answer(options(3, "X-Verdict: refuse\r\n"))
    out["raised"] = answer(options(4, "X-Verdict: raise\r\n"))
    out["ack_refused"] = answer(options(5, "X-Verdict: refuse\r\n", method="ACK"))
    out["checked_whole"] = [m == options(n) for m, n in zip(checked[:1], (2,), strict=False)]
    out["stats"] = native.sip_guard_stats()
    native.sip_guard_stop()
    out["after_stop"] = answer(options(6, "X-Verdict: refuse\r\n"))
    out["stats_after_stop"] = native.sip_guard_stats()
    client.close()
    return out


def main() -> int:
    scenario, wav = sys.argv[1], sys.argv[2]
    ep = endpoint()
    native = bind_native_ports()
    if native is None:
        print(json.dumps({"error": "the C port did not bind (see the warning above)"}))
        return 1
    result = {"layout": native.layout(), **globals()[scenario](ep, native, wav)}
    if scenario not in ("lifecycle",):
        run_for(ep, 0.7)
        result["pending_at_end"] = native.reap()
        ep.libDestroy()
        native.reap(library_gone=True)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
