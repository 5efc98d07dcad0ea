"""ASR worker pool: recognition off the media thread, in a bounded set of processes.

    pool = AsrPool(settings, on_event=callback)   # or iterate handle.events() in asyncio
    pool.start()                                  # spawns workers; each loads the model once
    handle = pool.open_stream(call_id, 8000)      # None when every slot is taken
    handle.feed(pcm)                              # never blocks; False once overflowed/closed
    handle.finish()                               # final segments follow, then a closed event
    pool.close()

Capacity is `workers * streams_per_worker` streams. Each stream may have `max_pending_chunks` chunks
sent but not yet processed by its worker; one more and the stream is marked `overflowed`, aborted
in the worker, and refuses further audio. In both refusals (None from open_stream, overflow) the
caller transcribes the call's recording after the call instead: live results are an optimisation,
the recording is the source of truth.

Processes use the spawn context (no forked copies of the parent's threads, sockets or event loop).
A worker that dies fails its streams with an error event and is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import logging
import multiprocessing as mp
import queue
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from multiprocessing.context import SpawnProcess
from typing import Any

from gateway.asr.engine import AsrError, AsrUnavailable, Recognizer, Segment, Stream, load_recognizer
from gateway.asr.settings import AsrSettings
from gateway.shell.embedded_redis import die_with_parent

log = logging.getLogger("gateway.asr.pool")

POLL_SECONDS = 0.2  # how often the reader thread checks that workers are alive


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """A segment for a stream, or (closed=True) the last event of that stream."""

    call_id: str
    segment: Segment | None = None
    closed: bool = False
    overflowed: bool = False
    error: str | None = None


# --- worker process ----------------------------------------------------------------------------


def _make_recognizer(settings: AsrSettings, factory: str | None) -> Recognizer:
    if factory is None:
        return load_recognizer(settings)
    module, _, name = factory.partition(":")
    made: Recognizer = getattr(importlib.import_module(module), name)(settings)
    return made


def worker_main(index: int, settings: AsrSettings, factory: str | None, commands: Any, results: Any) -> None:
    """Process entry: load once, then serve open/feed/finish/abort commands until `stop`."""
    die_with_parent()  # a SIGKILLed media worker must not leave its ASR workers behind
    try:
        recognizer = _make_recognizer(settings, factory)
        recognizer.prepare(settings.pool.streams_per_worker)
    except Exception as exc:  # report any load failure to the parent instead of dying silently
        results.put(("failed", index, f"{type(exc).__name__}: {exc}"))
        return
    results.put(("ready", index, None))
    streams: dict[str, Stream] = {}
    while True:
        command = commands.get()
        if command[0] == "stop":
            return
        _serve(command, streams, recognizer, results)


def _serve(command: tuple[Any, ...], streams: dict[str, Stream], recognizer: Recognizer, results: Any) -> None:
    kind, call_id = command[0], command[1]
    try:
        if kind == "open":
            streams[call_id] = recognizer.open(command[2])
        elif kind == "feed":
            segments = streams[call_id].feed(command[2]) if call_id in streams else []
            results.put(("ack", call_id, segments))
        elif kind == "finish":
            stream = streams.pop(call_id, None)
            results.put(("closed", call_id, stream.finish() if stream else []))
        elif kind == "abort":
            _discard(streams.pop(call_id, None))
            results.put(("closed", call_id, []))
    except Exception as exc:  # one bad stream must not take the worker's other calls down
        _discard(streams.pop(call_id, None))
        log.exception("asr stream %s failed", call_id)
        results.put(("error", call_id, f"{type(exc).__name__}: {exc}"))


def _discard(stream: Stream | None) -> None:
    """Finish a stream whose results nobody wants, so the engine gets its decoders back."""
    if stream is None:
        return
    try:
        stream.finish()
    except Exception:  # already failing; the decoders are lost, the recognizer makes new ones
        log.warning("asr stream could not be finished cleanly", exc_info=True)


# --- parent side ---------------------------------------------------------------------------------


@dataclass
class _Worker:
    index: int
    process: SpawnProcess
    commands: Any
    ready: bool = False
    streams: set[str] = field(default_factory=set)


class StreamHandle:
    """The media side's end of one pooled stream. `feed` is safe to call from the media thread."""

    def __init__(self, pool: AsrPool, worker: _Worker, call_id: str, max_pending: int) -> None:
        self.call_id = call_id
        self.overflowed = False
        self.closed = False
        self._pool = pool
        self._worker = worker
        self._max_pending = max_pending
        # Written by one thread each (sent: feeder, acked: pool reader), so no lock is needed.
        self._sent = 0
        self._acked = 0
        self._finishing = False
        self._sync: queue.SimpleQueue[StreamEvent] = queue.SimpleQueue()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async: asyncio.Queue[StreamEvent] | None = None
        try:
            self._loop = asyncio.get_running_loop()
            self._async = asyncio.Queue()
        except RuntimeError:
            pass  # no loop: use poll() or the pool's callback

    @property
    def pending(self) -> int:
        return self._sent - self._acked

    def feed(self, pcm: bytes) -> bool:
        """Queue audio; never blocks. False when the stream no longer takes audio (see overflowed)."""
        if self.closed or self.overflowed or self._finishing:
            return False
        if self.pending >= self._max_pending:
            self.overflowed = True
            self._worker.commands.put(("abort", self.call_id))
            log.warning("asr stream %s overflowed (%d chunks pending)", self.call_id, self.pending)
            return False
        self._sent += 1
        self._worker.commands.put(("feed", self.call_id, pcm))
        return True

    def finish(self) -> None:
        """End of audio: the worker flushes; final segments and then a closed event follow."""
        if not (self.closed or self.overflowed or self._finishing):
            self._finishing = True
            self._worker.commands.put(("finish", self.call_id))

    def abort(self) -> None:
        if not (self.closed or self._finishing):
            self._finishing = True
            self._worker.commands.put(("abort", self.call_id))

    def poll(self, timeout: float | None = None) -> StreamEvent | None:
        """Next event for a caller without an event loop; None on timeout."""
        try:
            return self._sync.get(timeout=timeout)
        except queue.Empty:
            return None

    async def events(self) -> AsyncIterator[StreamEvent]:
        """Events until (and including) the closed one. Only for handles opened inside a loop."""
        if self._async is None:
            raise RuntimeError("handle was opened outside an event loop: use poll()")
        while True:
            event = await self._async.get()
            yield event
            if event.closed:
                return

    def _deliver(self, event: StreamEvent) -> None:
        if self._loop is not None and self._async is not None:
            # A closed loop raises RuntimeError: nobody is listening any more.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._async.put_nowait, event)
        else:
            self._sync.put(event)


class AsrPool:
    def __init__(
        self,
        settings: AsrSettings,
        on_event: Callable[[StreamEvent], None] | None = None,
        factory: str | None = None,
    ) -> None:
        """`factory` ("module:function", taking settings) replaces the engine, for tests and benchmarks."""
        self.settings = settings
        self._on_event = on_event
        self._factory = factory
        self._ctx = mp.get_context("spawn")
        self._results: Any = self._ctx.Queue()
        self._workers: list[_Worker] = []
        self._handles: dict[str, StreamHandle] = {}
        self._lock = threading.Lock()
        self._ready = threading.Condition(self._lock)
        self._failure: str | None = None
        self._reader: threading.Thread | None = None
        self._stopping = False

    @property
    def capacity(self) -> int:
        with self._lock:
            return sum(self.settings.pool.streams_per_worker for w in self._workers if w.ready)

    @property
    def active(self) -> int:
        with self._lock:
            return len(self._handles)

    def start(self) -> None:
        """Spawn the workers and wait until each has loaded its model (AsrUnavailable if one cannot)."""
        self._workers = [self._spawn(i) for i in range(self.settings.pool.workers)]
        self._reader = threading.Thread(target=self._read, name="asr-pool-reader", daemon=True)
        self._reader.start()
        with self._ready:
            done = self._ready.wait_for(
                lambda: self._failure is not None or all(w.ready for w in self._workers),
                timeout=self.settings.pool.start_timeout,
            )
        if self._failure is not None or not done:
            reason = self._failure or f"workers not ready after {self.settings.pool.start_timeout} s"
            self.close()
            raise AsrUnavailable(f"ASR pool could not start: {reason}")

    def _spawn(self, index: int) -> _Worker:
        commands = self._ctx.Queue()
        process = self._ctx.Process(
            target=worker_main,
            args=(index, self.settings, self._factory, commands, self._results),
            name=f"asr-worker-{index}",
            daemon=True,
        )
        process.start()
        return _Worker(index, process, commands)

    def open_stream(self, call_id: str, sample_rate: int) -> StreamHandle | None:
        """A handle on the least busy worker, or None when the pool is saturated (or closed)."""
        with self._lock:
            if call_id in self._handles:
                raise AsrError(f"stream {call_id!r} is already open")
            if self._stopping:
                return None
            limit = self.settings.pool.streams_per_worker
            free = [w for w in self._workers if w.ready and len(w.streams) < limit]
            if not free:
                return None
            worker = min(free, key=lambda w: len(w.streams))
            handle = StreamHandle(self, worker, call_id, self.settings.pool.max_pending_chunks)
            worker.streams.add(call_id)
            self._handles[call_id] = handle
        worker.commands.put(("open", call_id, sample_rate))
        return handle

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers (open streams are dropped with an error event)."""
        self._stopping = True
        for worker in self._workers:
            worker.commands.put(("stop",))
        for worker in self._workers:
            worker.process.join(timeout)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout)
        for call_id in list(self._handles):
            self._close_handle(call_id, error="pool closed")
        if self._reader is not None:
            self._reader.join(timeout)

    # --- reader thread ---------------------------------------------------------------------

    def _read(self) -> None:
        while not (self._stopping and not any(w.process.is_alive() for w in self._workers)):
            try:
                message = self._results.get(timeout=POLL_SECONDS)
            except queue.Empty:
                self._check_workers()
                continue
            self._dispatch(message)

    def _dispatch(self, message: tuple[Any, ...]) -> None:
        kind, key, payload = message
        if kind in ("ready", "failed"):
            with self._ready:
                if kind == "ready":
                    self._workers[key].ready = True
                else:
                    self._failure = payload
                self._ready.notify_all()
            return
        handle = self._handles.get(key)
        if handle is None:
            return
        if kind == "ack":
            handle._acked += 1
        for segment in payload if kind in ("ack", "closed") else []:
            self._emit(handle, StreamEvent(key, segment))
        if kind == "closed":
            self._close_handle(key)
        elif kind == "error":
            self._close_handle(key, error=payload)

    def _emit(self, handle: StreamHandle, event: StreamEvent) -> None:
        # The callback first: whoever sees the event through the handle knows the callback has
        # already run for it.
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # a faulty callback must not stop delivery to other calls
                log.exception("asr on_event callback failed")
        handle._deliver(event)

    def _close_handle(self, call_id: str, error: str | None = None) -> None:
        with self._lock:
            handle = self._handles.pop(call_id, None)
            if handle is None:
                return
            handle._worker.streams.discard(call_id)
            handle.closed = True
        self._emit(handle, StreamEvent(call_id, closed=True, overflowed=handle.overflowed, error=error))

    def _check_workers(self) -> None:
        if self._stopping:
            return
        for worker in list(self._workers):
            if worker.process.is_alive():
                continue
            if not worker.ready:
                self._not_started(worker)
                continue
            log.error("asr worker %d died (exit %s); replacing it", worker.index, worker.process.exitcode)
            for call_id in list(worker.streams):
                self._close_handle(call_id, error="asr worker died")
            with self._lock:
                self._workers[worker.index] = self._spawn(worker.index)

    def _not_started(self, worker: _Worker) -> None:
        """A worker died while loading (import error, abort in native code): fail start, don't loop."""
        with self._ready:
            if self._failure is None:
                self._failure = f"asr worker {worker.index} exited with code {worker.process.exitcode} while loading"
                log.error("%s", self._failure)
            self._ready.notify_all()
