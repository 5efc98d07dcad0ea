"""Concurrent real-time streams through an `AsrPool`: how many keep up on this machine.

One pool (2 worker processes, one per core, `streams_per_worker` = the largest level / 2) is started
once; then for each level N (10, 25, 50, ...) N streams are opened and fed like the media worker
feeds them: every 100 ms, each stream gets the next 100 ms of its caller's audio (five 20 ms frames
joined), all streams on the same tick. A level keeps up when no stream overflowed or failed and no
stream ever had more than `max_lag` seconds of audio sent but not yet processed (the pool's
`StreamHandle.pending` x 100 ms, sampled before every feed). The ramp stops at the first level that
does not keep up.

Each stream plays the same looped track (navigation utterances with pauses for PocketSphinx; the
shared hotline sentences for Vosk dictation) from its own offset, so the utterances do not line up.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from bench import BenchError
from bench.asr.audio import Track
from bench.asr.engine import rss_mb, summary
from bench.common.procs import cpu_seconds, machine_busy_seconds
from gateway.asr.pool import AsrPool, StreamEvent, StreamHandle
from gateway.asr.settings import AsrSettings, PoolSettings

TICK_S = 0.1
WORKERS = 2  # one per core on the 2-core machine this is sized for
DRAIN_WAIT_S = 10.0


def progress(message: str) -> None:
    print(f"[asr] {message}", file=sys.stderr, flush=True)


@dataclass
class Collector:
    """Events from the pool's reader thread, with the monotonic time each arrived."""

    events: dict[str, list[tuple[float, StreamEvent]]] = field(default_factory=lambda: defaultdict(list))
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: StreamEvent) -> None:
        at = time.monotonic()
        with self.lock:
            self.events[event.call_id].append((at, event))

    def of(self, call_id: str) -> list[tuple[float, StreamEvent]]:
        with self.lock:
            return list(self.events.get(call_id, ()))


def worker_pids() -> list[int]:
    return sorted(p.pid for p in multiprocessing.active_children() if p.name.startswith("asr-worker") and p.pid)


class Ramp:
    def __init__(self, settings: AsrSettings, track: Track, levels: list[int], seconds: float, max_lag: float) -> None:
        self.track = track
        self.levels = levels
        self.seconds = seconds
        self.max_lag = max_lag
        per_worker = math.ceil(max(levels) / WORKERS)
        self.pool_settings = PoolSettings(
            workers=WORKERS,
            streams_per_worker=per_worker,
            max_pending_chunks=settings.pool.max_pending_chunks,
            start_timeout=60.0 + 2.0 * per_worker,  # PocketSphinx builds every decoder pair at start
        )
        self.settings = settings.model_copy(update={"pool": self.pool_settings})
        self.collector = Collector()

    def run(self) -> dict[str, Any]:
        pool = AsrPool(self.settings, on_event=self.collector)
        started = time.perf_counter()
        pool.start()  # on failure it closes itself and raises AsrUnavailable
        result: dict[str, Any] = {
            "workers": self.pool_settings.workers,
            "streams_per_worker": self.pool_settings.streams_per_worker,
            "max_pending_chunks": self.pool_settings.max_pending_chunks,
            "pool_start_s": round(time.perf_counter() - started, 1),
            "track_s": round(self.track.seconds, 1),
            "track_speech_fraction": self.track.speech_fraction,
            "level_s": self.seconds,
            "max_lag_s": self.max_lag,
            "levels": [],
        }
        try:
            pids = worker_pids()
            result["worker_rss_mb"] = [rss_mb(pid) for pid in pids]
            progress(f"pool up in {result['pool_start_s']} s: {WORKERS} workers x "
                     f"{self.pool_settings.streams_per_worker} streams, RSS {result['worker_rss_mb']} MB")  # fmt: skip
            for level in self.levels:
                figures = self.level(pool, level, pids)
                result["levels"].append(figures)
                progress(
                    f"{level} streams: {'kept up' if figures['kept_up'] else 'did NOT keep up'} "
                    f"(backlog max {figures['backlog_max_s']} s, overflowed {figures['overflowed']}, "
                    f"workers CPU {figures['cpu_pct']['workers']} %)"
                )
                if not figures["kept_up"]:
                    break
            result["worker_rss_end_mb"] = [rss_mb(pid) for pid in pids]
        finally:
            pool.close()
        kept = [lv["streams"] for lv in result["levels"] if lv["kept_up"]]
        result["max_streams_kept_up"] = max(kept) if kept else 0
        result["all_levels_kept_up"] = len(kept) == len(self.levels)
        return result

    def level(self, pool: AsrPool, count: int, pids: list[int]) -> dict[str, Any]:
        chunks = len(self.track.pcm) // len(self.track.chunk(0, 0))
        handles: list[StreamHandle] = []
        for i in range(count):
            handle = pool.open_stream(f"n{count}-{i}", 8000)
            if handle is None:
                for opened in handles:
                    opened.abort()
                raise BenchError(f"the pool refused stream {i + 1} of {count} (capacity {pool.capacity})")
            handles.append(handle)
        offsets = [(i * 37) % chunks for i in range(count)]  # 3.7 s apart, wrapping round the track
        ticks = round(self.seconds / TICK_S)
        backlog = [0] * count
        refused = [False] * count
        late_max = 0.0
        cpu_before = {pid: cpu_seconds(pid) for pid in pids}
        me_before, machine_before = cpu_seconds(os.getpid()), machine_busy_seconds()
        t0 = time.monotonic()
        for tick in range(ticks):
            due = t0 + (tick + 1) * TICK_S  # the moment the tick's 100 ms of audio is complete
            pause = due - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            late_max = max(late_max, time.monotonic() - due)
            for i, handle in enumerate(handles):
                if refused[i]:
                    continue
                backlog[i] = max(backlog[i], handle.pending)
                if not handle.feed(self.track.chunk(offsets[i], tick)):
                    refused[i] = True
        fed_until = time.monotonic()
        while any(h.pending for h in handles if not h.overflowed) and time.monotonic() - fed_until < DRAIN_WAIT_S:
            time.sleep(0.01)
        drain = time.monotonic() - fed_until
        wall = time.monotonic() - t0
        cpu: dict[str, Any] = {
            "workers": [round(100 * (cpu_seconds(pid) - cpu_before[pid]) / wall, 1) for pid in pids],
            "bench": round(100 * (cpu_seconds(os.getpid()) - me_before) / wall, 1),
            "machine": round(100 * (machine_busy_seconds() - machine_before) / wall, 1),
        }
        # Everything else on the machine meanwhile: when it is high, the level was disturbed.
        cpu["other"] = round(max(0.0, cpu["machine"] - sum(cpu["workers"]) - cpu["bench"]), 1)
        for handle in handles:
            handle.finish()
        deadline = time.monotonic() + DRAIN_WAIT_S
        while not all(h.closed for h in handles) and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.figures(count, handles, offsets, t0, backlog, drain, late_max, cpu)

    def figures(
        self,
        count: int,
        handles: list[StreamHandle],
        offsets: list[int],
        t0: float,
        backlog: list[int],
        drain: float,
        late_max: float,
        cpu: dict[str, Any],
    ) -> dict[str, Any]:
        first_partials: list[float] = []
        lags: list[float] = []
        errors: list[str] = []
        segments = 0
        for handle, offset in zip(handles, offsets, strict=True):
            events = self.collector.of(handle.call_id)
            errors += [e.error for _, e in events if e.error]
            timed = [(at, e.segment) for at, e in events if e.segment is not None]
            segments += len(timed)
            # How far behind the audio each result came: arrival - when the audio it covers was complete.
            lags += [at - (t0 + s.end) for at, s in timed if not s.final and at - t0 <= self.seconds]
            for onset in self.track.onsets_from(offset, self.seconds - 1.5):
                after = [at for at, s in timed if at >= t0 + onset and s.end >= onset]
                if after:
                    first_partials.append(after[0] - (t0 + onset))
        overflowed = sum(h.overflowed for h in handles)
        backlog_s = round(max(backlog) * TICK_S, 2)
        unclosed = sum(not h.closed for h in handles)
        kept_up = not overflowed and not errors and not unclosed and backlog_s <= self.max_lag and drain <= self.max_lag
        return {
            "streams": count,
            "kept_up": kept_up,
            "backlog_max_s": backlog_s,
            "drain_s": round(drain, 2),
            "overflowed": overflowed,
            "errors": len(errors),
            "error_sample": errors[:3],
            "unclosed": unclosed,
            "feeder_late_max_ms": round(late_max * 1000, 1),
            "segments": segments,
            "first_partial": {"utterances": len(first_partials), **summary(first_partials)},
            "partial_lag": summary(lags),
            "cpu_pct": cpu,
        }
