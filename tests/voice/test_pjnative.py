"""The C live-audio port (gateway/voice/_pjnative.c) against the real pjsua2 library.

Each scenario runs in its own process (tests/voice/pjnative_probe.py): PJSIP is a process singleton
and aborts on a bad call, so an abort shows here as a failed exit status with its output.
"""

from __future__ import annotations

import base64
import itertools
import json
import random
import struct
import subprocess
import sys
import wave
from pathlib import Path
from typing import Any

import pytest

PROBE = Path(__file__).with_name("pjnative_probe.py")
ROOT = Path(__file__).resolve().parents[2]
FRAME_BYTES = 320  # 20 ms at 8 kHz, 16-bit mono


@pytest.fixture(scope="module")
def noise_wav(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """2 s of seeded noise: any misplaced, repeated or missing frame shows in a byte comparison."""
    rng = random.Random(7)
    pcm = b"".join(struct.pack("<h", rng.randint(-12000, 12000)) for _ in range(16000))
    path = tmp_path_factory.mktemp("liveport") / "noise.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(pcm)
    return path, pcm


@pytest.fixture(scope="module")
def heard(noise_wav: tuple[Path, bytes]) -> dict[str, Any]:
    """The content scenario, run once for the tests that read it."""
    return probe("content", noise_wav[0])


def probe(scenario: str, wav: Path) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(PROBE), scenario, str(wav)], capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_port_binds_to_the_wheel_and_measures_its_layout(noise_wav: tuple[Path, bytes]) -> None:
    # In CI this must hold: a missing build or an unrecognised library would mean the Python port.
    layout = probe("bounded", noise_wav[0])["layout"]
    assert layout == {
        "info_bytes": 64,
        "grp_lock": 80,
        "get_clock_src": 88,
        "put_frame": 96,
        "get_frame": 104,
        "on_destroy": 112,
    }


def test_frames_are_the_sources_bytes_in_order_as_the_python_port_hears_them(
    noise_wav: tuple[Path, bytes], heard: dict[str, Any]
) -> None:
    pcm = noise_wav[1]
    result = heard
    c_pcm = base64.b64decode(result["c_pcm"])
    py_pcm = base64.b64decode(result["py_pcm"])
    assert result["c_sizes"] == [FRAME_BYTES]
    # 1.5 s of a 2 s file: at least 70 of its 100 frames, contiguous from where the port came in.
    assert len(c_pcm) >= 70 * FRAME_BYTES
    start = pcm.find(c_pcm[:FRAME_BYTES])
    assert start >= 0 and start % FRAME_BYTES == 0
    assert c_pcm == pcm[start : start + len(c_pcm)]
    # Both ports joined in the same loop turn; whatever both heard is the same audio.
    py_start = pcm.find(py_pcm[:FRAME_BYTES])
    assert py_start >= 0
    overlap_from = max(start, py_start)
    overlap_to = min(start + len(c_pcm), py_start + len(py_pcm))
    assert overlap_to - overlap_from >= 60 * FRAME_BYTES
    assert c_pcm[overlap_from - start : overlap_to - start] == py_pcm[overlap_from - py_start : overlap_to - py_start]


def test_stamps_and_gaps_follow_the_bridge_clock(heard: dict[str, Any]) -> None:
    result = heard
    stamps = result["c_stamps"]
    assert stamps == sorted(stamps) and stamps[-1] <= result["now"]
    assert result["frames"] == len(stamps) and result["dropped"] == 0
    # Each gap is the time between two frames' stamps (how regular the bridge is, docs/benchmarks.md, is
    # for the benchmark to say: a loaded test machine stretches it).
    between = [later - earlier for earlier, later in itertools.pairwise(stamps)]
    assert result["gaps"] == pytest.approx(between, abs=1e-5)
    assert result["max_gap"] == pytest.approx(max(result["gaps"]), abs=1e-6)


def test_an_undrained_ring_keeps_only_its_newest_frames_and_counts_the_rest(noise_wav: tuple[Path, bytes]) -> None:
    result = probe("bounded", noise_wav[0])
    assert result["drained"] == 10
    assert result["frames"] >= 40
    assert result["dropped"] == result["frames"] - 10
    assert result["again"] == 0
    assert result["pending_at_end"] == 0


def test_closed_ports_are_freed_once_pjsip_lets_go_and_misuse_is_an_error(noise_wav: tuple[Path, bytes]) -> None:
    result = probe("lifecycle", noise_wav[0])
    assert len(set(result["slots"])) == 3
    assert result["pending_at_close"] == 3
    assert result["pending_later"][-1] == 0  # on_destroy came, the grace period passed, memory freed
    assert result["slot_after_close"] == -1
    assert result["stats_after_close"][0] > 0  # what the port counted is kept
    assert result["drain_after_close"] == 0
    assert "closed" in result["listen_after_close"]
    assert len(result["bad_args"]) == 3
    assert result["other_thread"] and "thread" in result["other_thread"][0]
    # dropped without close(): it may still be in the bridge, so it waits for the library to go
    assert result["pending_with_a_dropped_port"] == 1
    assert result["pending_after_destroy"] == 0


def test_the_timer_heap_reader_agrees_with_pjsip_and_follows_its_timers(noise_wav: tuple[Path, bytes]) -> None:
    result = probe("timers", noise_wav[0])
    assert "check_timers() has not passed" in result["before_check"]
    own = result["pjsip_own_timer"]
    if own is None:  # an empty heap: the reader refused to be checked blind
        assert "schedule a PJSIP timer" in result["check_without_a_timer"]
    earliest_own = own if own is not None else float("inf")
    assert result["with_30s_timer"] == pytest.approx(min(earliest_own, 30.0), abs=0.5)
    assert result["with_1500ms_timer"] == pytest.approx(min(earliest_own, 1.5), abs=0.2)
    assert result["half_a_second_later"] == pytest.approx(min(earliest_own - 0.5, 1.0), abs=0.25)
    assert result["after_cancel"] == pytest.approx(min(earliest_own - 0.5, 29.5), abs=0.5)
    if own is None:
        assert result["without_ours"] is None  # PJSIP's own reader would have aborted on this heap


def test_the_media_poller_replaces_pjsips_media_thread_on_its_cadence(noise_wav: tuple[Path, bytes]) -> None:
    # The mechanism, not wall-clock counts: those failed 2 runs in 3 on a shared machine, and the
    # figures (wake-ups per second) are measured by the benchmarks.
    result = probe("media_poll", noise_wav[0])
    assert result["threads_before"].count("media") == 1  # PJSIP's own
    assert result["threads_running"].count("media") == 1  # ours instead of it
    assert "already running" in result["second_start"]
    assert result["first_poll"] and result["cadence_at_start"] == 5000
    assert result["running"] and result["cadence_after_change"] == 20
    assert result["woken_before_the_old_cadence"], "a cadence change wakes the poller, not the 5 s wait"
    assert result["keeps_polling"]
    assert len(result["bad_cadence"]) == 2
    assert result["stats_after_stop"]["running"] is False
    assert result["cadence_after_stop"] is False
    assert "media" not in result["threads_after_stop"]


def test_the_sip_guard_calibrates_on_its_probe_and_its_check_decides(noise_wav: tuple[Path, bytes]) -> None:
    result = probe("sip_guard", noise_wav[0])
    assert "a callable and a whole probe request" in result["bad_probe"]
    assert "already registered" in result["second_start"]
    assert result["before_calibration"] == "SIP/2.0 200 OK"  # another request first: PJSIP has it
    assert result["probe_answered"] is None  # the module took its probe
    assert result["calibrated"]["calibrated"] and result["calibrated"]["unchecked"] == 1
    assert result["passed"] == "SIP/2.0 200 OK"
    assert result["checked_whole"] == [True], "the check got the request's exact bytes"
    assert result["refused"] == "SIP/2.0 400 Bad Request (probe)"
    assert result["raised"] == "SIP/2.0 500 Server Internal Error"  # fail closed
    assert result["ack_refused"] is None  # an ACK is dropped, never answered
    assert {k: result["stats"][k] for k in ("seen", "refused")} == {"seen": 4, "refused": 3}
    assert result["after_stop"] == "SIP/2.0 200 OK" and not result["stats_after_stop"]["registered"]
