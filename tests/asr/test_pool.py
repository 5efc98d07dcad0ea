"""Worker pool: bounded capacity, non-blocking feed with overflow, results routed to the right call."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway.asr.engine import AsrError, AsrUnavailable
from gateway.asr.pool import AsrPool, StreamEvent, StreamHandle
from gateway.asr.settings import AsrSettings, PoolSettings
from peers.speech import read_pcm, synthesize


def pool_settings(**pool: Any) -> AsrSettings:
    return AsrSettings(pool=PoolSettings(**{"workers": 1, "streams_per_worker": 2, **pool}))


@pytest.fixture
def counting_pool() -> Iterator[AsrPool]:
    pool = AsrPool(pool_settings(), factory="tests.asr.fakes:counting")
    pool.start()
    yield pool
    pool.close()


def drain(handle: StreamHandle, timeout: float = 10.0) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        event = handle.poll(timeout=0.2)
        if event is not None:
            events.append(event)
            if event.closed:
                return events
    raise AssertionError(f"stream {handle.call_id} did not close; got {events}")


def test_more_streams_than_capacity_are_refused(counting_pool: AsrPool) -> None:
    assert counting_pool.capacity == 2
    a = counting_pool.open_stream("a", 8000)
    b = counting_pool.open_stream("b", 8000)
    assert a is not None and b is not None
    assert counting_pool.open_stream("c", 8000) is None  # saturated: caller uses the recording
    with pytest.raises(AsrError, match="already open"):
        counting_pool.open_stream("a", 8000)
    a.finish()
    drain(a)
    assert counting_pool.open_stream("c", 8000) is not None  # the slot came back


def test_results_reach_the_right_stream(counting_pool: AsrPool) -> None:
    a = counting_pool.open_stream("a", 8000)
    b = counting_pool.open_stream("b", 8000)
    assert a is not None and b is not None
    for _ in range(5):
        assert a.feed(b"\x00\x00" * 80)
        assert b.feed(b"\x00\x00" * 160)
    a.finish()
    b.finish()
    ea, eb = drain(a), drain(b)
    assert [e.segment.text for e in ea if e.segment and e.segment.final] == ["total 800"]
    assert [e.segment.text for e in eb if e.segment and e.segment.final] == ["total 1600"]
    assert ea[-1].closed and not ea[-1].overflowed and ea[-1].error is None
    assert not a.feed(b"\x00\x00")  # closed streams take no audio


def test_overflow_never_blocks_and_marks_the_stream() -> None:
    settings = pool_settings(max_pending_chunks=5)
    pool = AsrPool(settings, factory="tests.asr.fakes:slow")  # 50 ms per chunk: a stalled engine
    pool.start()
    try:
        fast = pool.open_stream("fast", 8000)
        assert fast is not None
        began = time.perf_counter()
        accepted = [fast.feed(b"\x00\x00" * 800) for _ in range(200)]
        assert time.perf_counter() - began < 0.5  # 200 feeds against a 10 s backlog: no blocking
        assert fast.overflowed and accepted.count(True) <= 6 and not accepted[-1]
        events = drain(fast)
        assert events[-1].closed and events[-1].overflowed
    finally:
        pool.close()


def test_a_failing_stream_does_not_hurt_its_neighbour(counting_pool: AsrPool) -> None:
    bad = counting_pool.open_stream("bad", 8000)
    good = counting_pool.open_stream("good", 8000)
    assert bad is not None and good is not None
    bad.feed(b"BOOM")
    good.feed(b"\x00\x00" * 10)
    good.finish()
    assert drain(bad)[-1].error == "ValueError: bad audio for this stream"
    assert [e.segment.text for e in drain(good) if e.segment and e.segment.final] == ["total 20"]


def test_load_failure_is_unavailable() -> None:
    pool = AsrPool(pool_settings(), factory="tests.asr.fakes:broken")
    with pytest.raises(AsrUnavailable, match="model file is corrupt"):
        pool.start()


def test_worker_dying_while_loading_fails_start_promptly() -> None:
    pool = AsrPool(pool_settings(), factory="tests.asr.fakes:dies")
    began = time.monotonic()
    with pytest.raises(AsrUnavailable, match="exited with code 3 while loading"):
        pool.start()
    assert time.monotonic() - began < 15


def test_dead_worker_fails_its_streams_and_is_replaced(counting_pool: AsrPool) -> None:
    handle = counting_pool.open_stream("a", 8000)
    assert handle is not None
    pid = counting_pool._workers[0].process.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    assert drain(handle)[-1].error == "asr worker died"
    deadline = time.monotonic() + 30
    while counting_pool.capacity < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert counting_pool.open_stream("b", 8000) is not None


async def test_async_iteration_and_callback() -> None:
    seen: list[StreamEvent] = []
    pool = AsrPool(pool_settings(), on_event=seen.append, factory="tests.asr.fakes:counting")
    pool.start()
    try:
        handle = pool.open_stream("x", 16000)
        assert handle is not None
        handle.feed(b"\x00\x00" * 1600)
        handle.finish()
        events = [event async for event in handle.events()]
        assert events[-1].closed and events[-2].segment is not None and events[-2].segment.text == "total 3200"
        assert seen == events
    finally:
        pool.close()


@pytest.mark.slow
def test_real_pocketsphinx_pool(model_dir: Path, tts: None, tmp_path: Path) -> None:
    words = {"c0": "交通", "c1": "住房", "c2": "交通"}
    audio = {cid: read_pcm(synthesize(w, tmp_path / f"{cid}.wav"))[1] for cid, w in words.items()}
    pool = AsrPool(AsrSettings(pool=PoolSettings(workers=2, streams_per_worker=1)))
    pool.start()
    try:
        handles = {cid: pool.open_stream(cid, 8000) for cid in ("c0", "c1")}
        assert pool.open_stream("c2", 8000) is None  # 2 workers x 1 stream
        for cid, handle in handles.items():
            assert handle is not None
            for at in range(0, len(audio[cid]), 1600):
                assert handle.feed(audio[cid][at : at + 1600])
            handle.finish()
        for cid, handle in handles.items():
            assert handle is not None
            texts = [e.segment.text for e in drain(handle, 30) if e.segment and e.segment.final]
            assert texts == [words[cid]]
    finally:
        pool.close()
