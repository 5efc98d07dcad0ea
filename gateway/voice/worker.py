"""The media worker: one process, one media engine (pjsua2), at most `calls_per_worker` call legs.

Each answered call gets a `CallSession` (`gateway.voice.session`): the translator between its legs
and its IVR machine. The worker keeps the sessions, the speech recognizers, the heartbeat and the
lifeline (`gateway.voice.lifeline`), and the call's intake in one place (`file`, `deliver`): a
ticket the store cannot take now goes to the worker's spool (`gateway.voice.spool`) and is filed
once the store answers again.

The worker talks to the core only through Redis (`gateway.voice.link`): tickets go in with the
queue's own intake, seats hear about calls through the control channel, and the core asks the
worker to ring an agent through the worker's inbox stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError

from gateway.asr.pool import StreamEvent
from gateway.asr.settings import PoolSettings
from gateway.config import GatewayConfig, split_listen
from gateway.errors import GatewayError, NotFound, ServiceUnavailable
from gateway.ivr.flow import RecordMessageNode
from gateway.messages import MalformedMessage, WorkerCommand
from gateway.queue import TicketQueue
from gateway.queue.desk import Accepted, Source
from gateway.shell.supervisor import RUN_ID_ENV
from gateway.shell.tasks import Tasks, stop_if_cancelled, stop_task
from gateway.ticket import Ticket, mask_phone
from gateway.voice.engine import Engine, EngineSettings, uri_user
from gateway.voice.lifeline import Lifeline, Verdict, drain_seconds
from gateway.voice.link import VoiceLink
from gateway.voice.media import CallLeg, LegListener, MediaEngine, MediaError, Scheduler
from gateway.voice.prompts import prompt_files, render_missing
from gateway.voice.session import CallSession, StoreFailure, refusal_of
from gateway.voice.speech import LiveSpeech, speech_summary
from gateway.voice.spool import PendingAsr, Spool, SpoolEntry

log = logging.getLogger("gateway.voice")


def _sip(error: type[GatewayError]) -> int:
    assert error.sip_status is not None, f"{error.__name__} refuses no call"
    return error.sip_status


# What a worker answers a call it refuses, from the exception tree (gateway/errors.py).
SIP_SERVICE_UNAVAILABLE = _sip(ServiceUnavailable)  # full, draining, or the spool full
SIP_NOT_FOUND = _sip(NotFound)  # no flow for the number called
SETTLE_SECONDS = 15.0  # at shutdown, how long the calls' settling may take (spooling included)

EngineFactory = Callable[[EngineSettings, Callable[[CallLeg, str], None]], MediaEngine]


@dataclass(frozen=True)
class WorkerSettings:
    """A worker's settings, derived from `[voice]` (`from_config`): declared there, once."""

    worker_id: str
    engine: EngineSettings
    prompts_dir: Path
    recordings_dir: Path
    spool_dir: Path  # `<recordings_dir>/spool`: beside the recordings its entries name
    base_dir: Path
    agent_answer_timeout: float
    max_position: int
    live_audio_frames: int
    heartbeat_interval: float
    worker_timeout: float
    drain_seconds: float  # how long callers may still take once Redis is lost (lifeline.drain_seconds)
    callback_priority: int

    @classmethod
    def from_config(cls, config: GatewayConfig, worker_id: str, listen: str | None = None) -> WorkerSettings:
        voice = config.voice
        host, port = split_listen(listen or voice.listen)
        recordings_dir = config.resolve(voice.recordings_dir)
        messages = (
            node.max_seconds
            for ivr in config.ivr.values()
            for node in ivr.flow.nodes.values()
            if isinstance(node, RecordMessageNode)
        )
        return cls(
            worker_id=worker_id,
            engine=EngineSettings.from_voice(voice, host, port),
            prompts_dir=config.resolve(voice.prompts_dir),
            recordings_dir=recordings_dir,
            spool_dir=recordings_dir / "spool",
            base_dir=Path(config.base_dir),
            agent_answer_timeout=voice.agent_answer_timeout,
            max_position=voice.max_position_announced,
            live_audio_frames=voice.live_audio_frames,
            heartbeat_interval=voice.heartbeat_interval,
            worker_timeout=voice.worker_timeout,
            drain_seconds=drain_seconds(messages),
            callback_priority=voice.callback_priority,
        )

    @property
    def sip(self) -> str:
        return f"{self.engine.host}:{self.engine.port}"


def _brief(exc: BaseException) -> str:
    """An error in a few words for a log line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _has_speech_route(config: GatewayConfig) -> bool:
    return any(node.type == "speech_route" for ivr in config.ivr.values() for node in ivr.flow.nodes.values())


def _hand_over(
    event: StreamEvent, sessions: dict[str, CallSession], deliver: Callable[[CallSession, StreamEvent], None]
) -> None:
    """A recognizer's event to the session of its call, if it still has one; a closed stream's call
    is forgotten."""
    session = sessions.get(event.call_id)
    if session is not None:
        deliver(session, event)
    if event.closed:
        sessions.pop(event.call_id, None)


class MediaWorker:
    def __init__(
        self,
        config: GatewayConfig,
        queue: TicketQueue,
        settings: WorkerSettings,
        make_engine: EngineFactory = Engine,
        scheduler: Scheduler | None = None,
    ) -> None:
        """`make_engine` and `scheduler` stand in for pjsua2 and the loop's timers in the fast tests."""
        self.config = config
        self.settings = settings
        self.queue = queue
        self.link = VoiceLink(queue)
        self.tasks = Tasks()
        self.engine = make_engine(settings.engine, self._incoming)
        self.scheduler: Scheduler = scheduler or asyncio.get_running_loop()
        self.spool = Spool(settings.spool_dir)
        self._spool_waiting = True  # entries may wait (from before this process): looked at after the claim
        self._filing: asyncio.Task[int] | None = None
        self._spooled = 0  # entries in the spool, as last counted (new calls are refused at its bound)
        self.sessions: dict[str, CallSession] = {}
        # Calls whose speech is still being recognized (a little longer than the call itself).
        self.listening: dict[str, CallSession] = {}
        self.speech = LiveSpeech(config.asr, self._on_speech) if config.asr.enabled else None
        # Speech navigation runs its own grammar recognizer, only when some flow asks for it.
        # One process with a decoder per caller slot: grammar decoding is cheap (RTF ~0.01) but each
        # decoder pair holds ~85 MB, and every media worker has its own.
        navigation_settings = config.asr.model_copy(
            update={
                "engine": config.asr.navigation_engine,
                "pool": PoolSettings(workers=1, streams_per_worker=max(1, settings.engine.max_calls // 2)),
            }
        )
        self.navigation = (
            LiveSpeech(navigation_settings, self._on_navigation)
            if config.asr.navigation_enabled and _has_speech_route(config)
            else None
        )
        self.routing: dict[str, CallSession] = {}
        self.by_ticket: dict[str, CallSession] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._engine_started = False  # PJSIP created (its shutdown is due)
        self._claimed = False  # this process beat under its id (the heartbeat is its own to retire)
        # Set when the worker must stop on its own (Redis lost too long, supervisor gone); `exit_status`
        # is then the process's: 1 after losing Redis (a supervisor starts it again), 0 otherwise.
        self.must_stop = asyncio.Event()
        self.exit_status = 0
        self.lifeline = Lifeline(settings.worker_timeout, settings.drain_seconds, os.getppid(), 0.0)
        self._redis_trouble_told = False  # a Redis failure was logged; quiet until Redis answers again
        self.hostname = socket.gethostname()  # in the heartbeat: an id is one worker's on one machine

    @property
    def sip(self) -> str:
        return self.settings.sip

    @property
    def callers(self) -> int:
        return len(self.sessions)

    @property
    def caller_capacity(self) -> int:
        """Each caller may need a second leg for its agent, so half the legs take callers."""
        return max(1, self.settings.engine.max_calls // 2)

    def render_prompts(self) -> int:
        rendered = 0
        for ivr in self.config.ivr.values():
            prompts = {pid: (spec.text, spec.file) for pid, spec in ivr.flow.prompts.items()}
            files = list(
                prompt_files(
                    prompts,
                    self.settings.prompts_dir,
                    ivr.flow.id,
                    self.settings.base_dir,
                    self.settings.max_position,
                )
            )
            rendered += len(render_missing(files))
        return rendered

    def _on_speech(self, event: StreamEvent) -> None:
        _hand_over(event, self.listening, CallSession.on_speech)

    def _on_navigation(self, event: StreamEvent) -> None:
        _hand_over(event, self.routing, CallSession.on_navigation)

    async def start(self) -> None:
        # The id first: while another worker (another host) has it, nothing is bound or written.
        await self.link.claim_id(self.settings.worker_id, self.sip, self.settings.callback_priority, self.hostname)
        if self.speech is not None:
            await self.speech.start()
        if self.navigation is not None:
            await self.navigation.start()
        flows_navigate = _has_speech_route(self.config)
        log.info(speech_summary(self.config.asr.enabled, self.speech, self.navigation, flows_navigate))
        rendered = await asyncio.to_thread(self.render_prompts)
        if rendered:
            log.info("rendered %d prompt(s) with espeak-ng", rendered)
        self._engine_started = True
        self.engine.start()
        await self._beat(first=True)
        self._claimed = True
        self.lifeline = Lifeline(
            self.settings.worker_timeout, self.settings.drain_seconds, self.lifeline.parent, time.monotonic()
        )
        self._file_spool_soon()  # what an earlier worker kept (this one's predecessor, say)
        self._loops = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._inbox(), name="inbox"),
        ]

    def _incoming(self, leg: CallLeg, request_uri: str) -> None:
        if self.callers >= self.caller_capacity or self.lifeline.draining or self._spooled >= self.spool.max_entries:
            # Full, or draining (Redis lost: callers go to workers that have it), or a spool that
            # keeps the limit of calls nobody could file yet. Decided before the leg's dialog is
            # read: a refused INVITE without an offer may already have ended it.
            self.count(**{"voice.rejected_full": 1})
            leg.hang_up(SIP_SERVICE_UNAVAILABLE)
            return
        try:
            remote, local = leg.parties()
        except MediaError as exc:
            log.info("incoming call gone before it was taken (%s)", exc)
            return
        called = uri_user(request_uri) or uri_user(local)
        voice = self.config.voice
        flow_id = voice.numbers.get(called, voice.default_flow)
        if flow_id is None or flow_id not in self.config.ivr:
            log.info("call to unknown number %s refused (404)", mask_phone(called))
            leg.hang_up(SIP_NOT_FOUND)
            return
        session = CallSession(self, leg, self.config.ivr[flow_id], uri_user(remote), called)
        listener: LegListener = session
        leg.listener = listener
        leg.label = f"caller-{session.call_id}"
        self.sessions[session.call_id] = session
        leg.accept(200)

    def forget(self, session: CallSession) -> None:
        self.sessions.pop(session.call_id, None)

    def count(self, **increments: int) -> None:
        self.tasks.spawn(self._count(increments))

    async def _count(self, increments: dict[str, int]) -> None:
        with contextlib.suppress(ServiceUnavailable, RedisError, OSError):  # counters are not worth a line
            await self.link.count(**increments)

    @property
    def store_lost(self) -> bool:
        """Redis did not take the last heartbeat: a call's settlement goes to the spool at once."""
        return self.lifeline.failing

    async def file(self, ticket: Ticket) -> Accepted:
        """The one place a call's ticket enters the store (the caller's at the queue, a callback,
        the spool's entries), through the intake entry point."""
        return await self.link.desk.submit(ticket, Source.worker(self.settings.worker_id))

    async def deliver(self, call_id: str, ticket: Ticket, pending: PendingAsr | None, reason: str) -> None:
        """A ticket made as a call ends (a callback): filed, or, when the store cannot take it now
        (out of reach, the queue full), written to the spool before the call counts as settled."""
        if not self.store_lost:
            try:
                result = await self.file(ticket)
                if pending is not None:
                    await self.link.add_pending(result.ticket_id, Path(pending.path), pending.reason)
            except StoreFailure as exc:
                if refusal_of(exc) == "unavailable":
                    self.redis_trouble(call_id, exc)
            else:
                log.info("call %s: callback ticket %s queued (%s)", call_id, result.ticket_id, reason)
                return
        await asyncio.to_thread(self.spool.put, SpoolEntry(ticket, pending))
        self._spooled += 1
        self._spool_waiting = True
        log.warning(
            "call %s: callback ticket %s (%s) kept in the spool until the store takes it", call_id, ticket.id, reason
        )

    def _file_spool_soon(self) -> None:
        if self._spool_waiting and (self._filing is None or self._filing.done()):
            self._filing = self.tasks.spawn(self.file_spool())

    async def file_spool(self) -> int:
        """File the spool's entries, oldest first; stop at the first sign the store is out of reach
        (an entry whose queue is full waits, the next one is tried). How many were filed."""
        self._spool_waiting = False
        filed = 0
        entries = self.spool.entries()
        for path in entries:
            outcome = await self._file_entry(path)
            filed += outcome is True
            if outcome is None:
                break
        self._spooled = len(self.spool.entries()) if filed or entries else 0
        return filed

    async def _file_entry(self, path: Path) -> bool | None:
        """True: filed and deleted; False: not now (held by another worker, its queue full, set
        aside); None: the store is out of reach."""
        with self.spool.claim(path) as entry:
            if entry is None:
                return False
            try:
                result = await self.file(entry.ticket)
                if entry.pending is not None:
                    await self.link.add_pending(result.ticket_id, Path(entry.pending.path), entry.pending.reason)
            except StoreFailure as exc:
                self._spool_waiting = True
                return None if refusal_of(exc) == "unavailable" else False
            self.spool.remove(path)
        log.info(
            "spooled ticket %s filed: ticket %s (%s)%s",
            entry.ticket.id,
            result.ticket_id,
            mask_phone(entry.ticket.citizen.phone),
            "" if result.created else ", the store had it already",
        )
        return True

    def redis_trouble(self, call_id: str, exc: Exception) -> None:
        """A call's Redis work failed: one line while Redis stays out of reach, not one per attempt
        (the heartbeat decides whether the worker stops)."""
        if not self._redis_trouble_told:
            self._redis_trouble_told = True
            log.warning("call %s: redis unreachable (%s); quiet until it answers again", call_id, _brief(exc))

    async def _beat(self, first: bool = False) -> None:
        info = {
            "sip": self.sip,
            "host": self.hostname,
            "pid": str(os.getpid()),
            # The `run` that started this worker ('' when started by hand): status tells this run's
            # workers from strangers answering under the same id (an orphan of a killed run).
            "run": os.environ.get(RUN_ID_ENV, ""),
            "callers": str(self.callers),
            "legs": str(self.engine.active_legs),
            "capacity": str(self.caller_capacity),
            # how live audio leaves PJSIP's bridge: "c" (gateway/voice/_pjnative.c) or "python"
            "audio": "c" if self.engine.native_live_audio else "python",
        }
        if first:  # refused if a worker elsewhere started under the same id meanwhile
            await self.link.claim(self.settings.worker_id, self.settings.worker_timeout, info)
        else:
            await self.link.heartbeat(self.settings.worker_id, self.settings.worker_timeout, info)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval)
            problem = await self._try_beat()
            if self.judge_beat(problem, time.monotonic()):
                return

    def judge_beat(self, problem: Exception | None, now: float) -> bool:
        """Act on one heartbeat's fate (None: Redis took it) as the lifeline says; True when the
        worker must stop (`must_stop` is set)."""
        lost_for = self.lifeline.lost_for(now)
        self.lifeline, verdict = self.lifeline.beat(problem is None, os.getppid(), now, callers=self.callers)
        if verdict is Verdict.STOP_SUPERVISOR_GONE:
            self._give_up(0, "its supervisor (pid %d) is gone", self.lifeline.parent)
            return True
        if verdict is Verdict.STOP_REDIS_LOST:
            if problem is None:
                self._give_up(1, "its calls are over after redis was lost for %.1f s", lost_for)
            else:
                self._give_up(1, "redis unreachable for %.1f s (%s)", self.lifeline.lost_for(now), _brief(problem))
            return True
        if verdict is Verdict.REDIS_BACK:
            self._redis_trouble_told = False
            log.info("redis reachable again after %.1f s without a heartbeat", lost_for)
        elif verdict is Verdict.DRAIN:
            self._drain(self.lifeline.lost_for(now), problem)
        if not self.lifeline.failing:
            self._file_spool_soon()
        return False

    def _drain(self, lost_for: float, problem: Exception | None) -> None:
        """Redis lost for `worker_timeout`: no new calls; callers waiting for an agent go to the
        apology and a voice message; every caller may finish (the lifeline bounds how long)."""
        self._redis_trouble_told = True  # said here, once
        log.error(
            "redis unreachable for %.1f s (%s): taking no new calls; %d call(s) may finish within %.0f s, "
            "what Redis cannot take kept in the spool (%s)",
            lost_for,
            _brief(problem or Exception()),
            self.callers,
            self.settings.drain_seconds,
            self.settings.spool_dir,
        )
        for session in list(self.sessions.values()):
            session.store_lost()

    async def _try_beat(self) -> Exception | None:
        """One heartbeat, bounded: a Redis that does not answer at all must not stall the loop that
        decides to stop. The failure, or None."""
        try:
            await asyncio.wait_for(self._beat(), self.settings.worker_timeout)
        except (GatewayError, RedisError, OSError, TimeoutError) as exc:
            return exc
        except Exception as exc:  # a bug, not Redis: its traceback once, then it counts as a failure
            if not self.lifeline.failing:
                log.exception("heartbeat failed")
            return exc
        return None

    def _give_up(self, status: int, why: str, *args: object) -> None:
        """Stop the worker from inside: one line saying why, then the same shutdown as SIGTERM."""
        self._redis_trouble_told = True  # the settling that follows may fail on Redis: said here
        log.error(
            why + ": stopping with %d call(s); what Redis cannot take is kept in the spool, the rest the core "
            "settles from Redis later",
            *args,
            self.callers,
        )
        self.exit_status = status
        self.must_stop.set()

    async def _inbox(self) -> None:
        last_id = "$"
        failing = False
        while True:
            try:
                commands = await self.link.read_inbox(self.settings.worker_id, last_id, 1000)
            except (GatewayError, RedisError, OSError):
                await asyncio.sleep(1.0)  # Redis out of reach: the heartbeat reports it, once
                continue
            except Exception:
                if not failing:  # a bug, not Redis: its traceback once, not every second
                    log.exception("inbox read failed")
                failing = True
                await asyncio.sleep(1.0)
                continue
            failing = False
            stop_if_cancelled()
            for entry_id, command in commands:
                last_id = entry_id
                self._command(command)

    def _command(self, command: WorkerCommand | MalformedMessage) -> None:
        if isinstance(command, MalformedMessage):
            log.warning("inbox: %s; dropped", command.message)
            return
        session = self.by_ticket.get(command.ticket)
        if session is None:
            log.info("connect for ticket %s: the call is gone", command.ticket)
            return
        session.dial_agent(command.ticket, command.agent, command.uri)

    async def stop(self) -> None:
        """SIGTERM: every caller gets a BYE, every ticket is settled, then PJSIP is destroyed."""
        for task in self._loops:
            task.cancel()  # awaited below, again and again if need be (stop_task)
        for session in list(self.sessions.values()):
            session.shutdown()
        await self.tasks.drain(SETTLE_SECONDS)
        if self._engine_started:
            await self.engine.shutdown()
        for recognizer in (self.speech, self.navigation):
            if recognizer is not None:
                await recognizer.close()
        for task in self._loops:
            await stop_task(task)
        self.listening.clear()
        self.routing.clear()
        if not self._claimed:
            return  # refused or failed before its first beat: the id's heartbeat is another worker's
        if not self.store_lost:
            # What the calls left in the spool goes in now if it can; else the next worker files it.
            with _said_once("filing the spool at shutdown"):
                await asyncio.wait_for(self.file_spool(), SETTLE_SECONDS)
        # Redis gone: the heartbeat stays and lapses, and the core settles what is left.
        with _said_once("retiring the heartbeat"):
            await self.link.retire(self.settings.worker_id)


@contextlib.contextmanager
def _said_once(what: str) -> Iterator[None]:
    """A shutdown step that may fail: Redis out of reach (or slow) is expected then, and the
    lifeline has said so once already (debug only here); any other error of the gateway is a
    problem worth its own line, never silent."""
    try:
        yield
    except (ServiceUnavailable, RedisError, OSError, TimeoutError) as exc:
        log.debug("%s: redis unavailable (%s)", what, _brief(exc))
    except GatewayError as exc:
        log.error("%s failed: %s", what, exc)
