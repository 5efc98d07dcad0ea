"""The media worker: one process, one pjsua2 endpoint, at most `calls_per_worker` call legs.

Each answered call gets a `CallSession`: it feeds the pure `CallMachine` events (from pjsua2
callbacks, timers and the queue) and carries out the actions it returns. Everything runs on the
asyncio loop thread; Redis work for a call runs in that call's own ordered I/O task, so the machine
is never blocked and the call's side effects happen in the order the machine asked for them.

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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import pjsua2 as pj
from redis.exceptions import RedisError

from gateway.asr.navigation import Thresholds, decide
from gateway.asr.pool import StreamEvent
from gateway.asr.settings import PoolSettings
from gateway.asr.text import extract
from gateway.config import GatewayConfig, split_listen
from gateway.errors import GatewayError, ServiceUnavailable
from gateway.ivr import actions as act
from gateway.ivr import events as ev
from gateway.ivr.flow import IvrConfig
from gateway.ivr.machine import CallMachine
from gateway.messages import MalformedMessage, WorkerCommand
from gateway.queue import TicketQueue
from gateway.shell.supervisor import RUN_ID_ENV
from gateway.shell.tasks import Tasks, stop_if_cancelled, stop_task
from gateway.ticket import Citizen, Ticket, TranscriptSegment, VoiceCall, mask_phone, new_ticket_id, utcnow
from gateway.voice.engine import Engine, EngineSettings, Leg, LiveAudio, NativeLiveAudio, Prompt, uri_user
from gateway.voice.lifeline import Lifeline, Verdict
from gateway.voice.link import VoiceLink, callback_ticket, recording_attachment
from gateway.voice.prompts import prompt_files, prompt_wav, render_missing
from gateway.voice.recordings import recording_path
from gateway.voice.speech import FanOut, LiveSpeech, Tap, speech_summary
from gateway.voice.wav import header_complete, repair_header, wav_seconds

log = logging.getLogger("gateway.voice")

SIP_SERVICE_UNAVAILABLE = 503
SIP_NOT_FOUND = 404


AGENT_STREAM = "-agent"  # the agent leg's recognition stream: the call id with this suffix
AGENT_NO_ANSWER = "agent_no_answer"  # requeue reason (docs/seat-protocol.md): agent_answer_timeout passed


class MediaGone(Exception):
    """A media operation needs a leg whose audio is not (or no longer) active."""


@dataclass(frozen=True)
class WorkerSettings:
    worker_id: str
    host: str
    port: int
    calls_per_worker: int
    prompts_dir: Path
    recordings_dir: Path
    base_dir: Path
    agent_answer_timeout: float
    max_position: int
    live_audio_frames: int
    heartbeat_interval: float
    worker_timeout: float
    poll_interval: float
    idle_poll_interval: float
    callback_priority: int
    rtp_port: int = 4000
    rtp_port_range: int = 16
    native_live_audio: bool = True
    media_poll_ms: int = 20

    @classmethod
    def from_config(cls, config: GatewayConfig, worker_id: str, listen: str | None = None) -> WorkerSettings:
        voice = config.voice
        host, port = split_listen(listen or voice.listen)
        rtp_port, rtp_port_range = voice.rtp_ports(port)
        return cls(
            worker_id=worker_id,
            host=host,
            port=port,
            calls_per_worker=voice.calls_per_worker,
            prompts_dir=config.resolve(voice.prompts_dir),
            recordings_dir=config.resolve(voice.recordings_dir),
            base_dir=Path(config.base_dir),
            agent_answer_timeout=voice.agent_answer_timeout,
            max_position=voice.max_position_announced,
            live_audio_frames=voice.live_audio_frames,
            heartbeat_interval=voice.heartbeat_interval,
            worker_timeout=voice.worker_timeout,
            poll_interval=voice.poll_interval,
            idle_poll_interval=voice.idle_poll_interval,
            callback_priority=voice.callback_priority,
            rtp_port=rtp_port,
            rtp_port_range=rtp_port_range,
            native_live_audio=voice.native_live_audio,
            media_poll_ms=voice.media_poll_ms,
        )


class CallSession:
    """One caller: its machine, its legs and media, its ticket. Implements `LegListener`."""

    def __init__(self, worker: MediaWorker, leg: Leg, ivr: IvrConfig, called: str) -> None:
        self.worker = worker
        self.settings = worker.settings
        self.leg: Leg | None = leg
        self.flow = ivr.flow
        self.machine = CallMachine(ivr.flow, ivr.calendars)
        self.call_id = new_ticket_id(utcnow())
        self.caller = uri_user(leg.getInfo().remoteUri)
        self.called = called
        self.started = utcnow()
        self.player: Prompt | None = None
        self.plays = 0
        self.player_prompt = ""
        self.recorders: dict[str, pj.AudioMediaRecorder] = {}
        self.recording_files: dict[str, Path] = {}
        self.live: LiveAudio | NativeLiveAudio | None = None
        self.timers: dict[str, asyncio.TimerHandle] = {}
        self.fields: dict[str, str] = {}
        self.ticket_id: str | None = None
        self.queued_at: datetime | None = None
        self.agent_leg: Leg | None = None
        self.agent: str | None = None
        self.agent_timer: asyncio.TimerHandle | None = None
        # Why the worker itself ended the agent leg, when it did: the leg's last SIP status then says
        # nothing about the phone (our CANCEL's own 200 once read as "agent_failed_200").
        self.agent_dropped_because: str | None = None
        self.bridged = False
        self.answered = False
        self.closed = False
        self.shutting_down = False
        self.transcript: list[TranscriptSegment] = []
        self.fan: FanOut | None = None
        self.agent_live: LiveAudio | NativeLiveAudio | None = None
        self.dictation_tap: Tap | None = None
        self.navigation_tap: Tap | None = None
        self.route_decided = False
        self.transcribed_live = False
        self.asr_missed = ""  # why (part of) the call must be transcribed from its recording
        self._io: asyncio.Queue[Callable[[], Awaitable[None]] | None] = asyncio.Queue()
        self._io_task = worker.tasks.spawn(self._run_io())
        self._io_closed = False

    # --- events in ---------------------------------------------------------------------------

    def on_state(self, leg: Leg, state: int, status: int) -> None:
        if leg is self.leg:
            if state == pj.PJSIP_INV_STATE_DISCONNECTED:
                self.feed(ev.HungUp())
        elif leg is self.agent_leg:
            self._agent_state(state, status)

    def on_media(self, leg: Leg, media: pj.AudioMedia) -> None:
        if leg is self.leg and not self.answered:
            self.answered = True
            self._record("caller", media)
            self.live = self.worker.engine.live_audio(media, f"live-{self.call_id}", self.settings.live_audio_frames)
            self._start_transcribing()
            self.worker.count(**{"voice.calls": 1})
            log.info("call %s answered: %s -> %s", self.call_id, mask_phone(self.caller), self.flow.id)
            self.feed(ev.Answered(now=utcnow(), caller=self.caller, called=self.called))
        elif leg is self.leg and not self.closed:
            self._reattach_caller(media)
        elif leg is self.agent_leg and self.bridged:
            self._connect_bridge()

    def _start_transcribing(self) -> None:
        if self.live is not None:
            self.fan = FanOut(self.live, self.settings.live_audio_frames)
        speech = self.worker.speech
        if speech is None or self.fan is None:
            return
        self.dictation_tap = self.fan.tap()
        self.transcribed_live = speech.open(self.call_id, self.dictation_tap)
        if self.transcribed_live:
            self.worker.listening[self.call_id] = self
        else:
            self.asr_missed = "asr_unavailable" if not speech.available else "asr_busy"

    def on_speech(self, event: StreamEvent) -> None:
        """A recognized segment of the caller's (or, after the answer, the agent's) speech, or the
        end of a stream."""
        speaker: Literal["caller", "agent"] = "agent" if event.call_id.endswith(AGENT_STREAM) else "caller"
        if event.closed and (event.overflowed or event.error) and speaker == "caller":
            self.asr_missed = "asr_overflow" if event.overflowed else "asr_error"
        if event.segment is None:
            return
        part = event.segment
        segment = TranscriptSegment(
            speaker=speaker,
            text=part.text[:4000],
            start=max(0.0, part.start),
            end=max(0.0, part.end),
            confidence=min(1.0, max(0.0, part.confidence)),
            final=part.final,
        )
        if segment.final:
            self.transcript.append(segment)
            if speaker == "caller":
                self.feed(ev.SpeechResult(segment.text, segment.confidence, final=True))
        self._enqueue_io(lambda: self._share_segment(segment))

    async def _share_segment(self, segment: TranscriptSegment) -> None:
        """To the seat holding the ticket now; final segments also into the ticket itself."""
        if self.ticket_id is None:
            return  # not queued yet: the segments go into the ticket at intake
        await self.worker.link.publish_transcript(self.ticket_id, segment)
        if segment.final:
            await self.worker.queue.amend(
                self.ticket_id,
                lambda t: prefilled(t.model_copy(update={"transcript": (*t.transcript, segment)[-200:]}), [segment]),
                f"worker:{self.settings.worker_id}",
                "transcript",
            )

    def _reattach_caller(self, media: pj.AudioMedia) -> None:
        """A re-INVITE rebuilt the caller's stream, on a new bridge slot: connect everything again."""
        for kind, recorder in self.recorders.items():
            if kind != "agent":
                media.startTransmit(recorder)
        if self.live is not None:
            self.live.listen(media)
        if self.player is not None:
            self.player.startTransmit(media)
        if self.bridged:
            self._connect_bridge()

    def _connect_bridge(self) -> None:
        """Caller and agent hear each other; the agent is recorded. Safe to repeat after a re-INVITE
        (pjsua re-INVITEs the agent leg right after it answers, and the stream may move slots)."""
        caller, agent = self._caller_media, self.agent_leg.media if self.agent_leg else None
        if caller is None or agent is None:
            raise MediaGone("a leg of the bridge has no active audio")
        caller.startTransmit(agent)
        agent.startTransmit(caller)
        if "agent" in self.recorders:
            agent.startTransmit(self.recorders["agent"])
        if self.agent_live is not None:
            self.agent_live.listen(agent)

    def on_digit(self, leg: Leg, digit: str) -> None:
        if leg is self.leg and digit in ev.DTMF_DIGITS:
            self.feed(ev.Digit(digit))

    def feed(self, event: ev.Event) -> None:
        if self.closed:
            return
        node_before = self.machine.node_id
        for action in self.machine.handle(event):
            self._do(action)
        if self.machine.node_id != node_before and self.machine.node_id:
            self.worker.count(**{f"voice.node.{self.machine.node_id}": 1})
        if self.machine.error is not None:
            log.error("call %s: IVR core failed: %r", self.call_id, self.machine.error)
        if self.machine.finished:
            self._finish()

    # --- actions out -------------------------------------------------------------------------

    def _do(self, action: act.Action) -> None:
        handler = _HANDLERS[type(action)]
        try:
            handler(self, action)
        except (pj.Error, MediaGone, OSError) as exc:
            # Fail closed: a media operation that fails ends the call; it never leaves it hanging.
            detail = exc.info() if isinstance(exc, pj.Error) else str(exc)
            log.error("call %s: %s failed: %s", self.call_id, type(action).__name__, detail)
            self._hang_up_caller()

    def _play(self, action: act.Play) -> None:
        self._stop_prompt()
        media = self._caller_media
        if media is None:
            return
        params = dict(action.params)
        n = min(int(params["n"]), self.settings.max_position) if "n" in params else None
        spec = self.flow.prompts[action.prompt]
        if spec.file:
            path = Path(spec.file) if Path(spec.file).is_absolute() else self.settings.base_dir / spec.file
        else:
            path = prompt_wav(self.settings.prompts_dir, self.flow.id, action.prompt, n)
        prompt_id = action.prompt
        self.plays += 1
        generation = self.plays

        def ended() -> None:
            # Only the prompt still playing may report its end (not one stopped or replaced). The
            # closure holds a number, not the player: a player -> closure -> player cycle would
            # outlive libDestroy and abort the process at exit.
            if self.player is not None and self.plays == generation and not self.closed:
                self.feed(ev.PromptFinished(prompt_id))

        self.player = self.worker.engine.play(path, media, ended)
        self.player_prompt = prompt_id

    def _stop_prompt(self, _: act.StopPrompt | None = None) -> None:
        if self.player is not None:
            self.worker.engine.stop_player(self.player, self._caller_media)
            self.player = None

    def _start_recording(self, action: act.StartRecording) -> None:
        if self._caller_media is not None:
            self._record(action.kind, self._caller_media)
        if action.kind == "navigation":
            self._listen_for_route()

    def _stop_recording(self, _: act.StopRecording) -> None:
        for kind in ("speech", "message", "navigation"):
            self._close_recorder(kind)
        self._stop_route_listening()

    def _listen_for_route(self) -> None:
        """Speech navigation: the caller's words go to the navigation grammar; its first final
        result becomes one `SpeechRoute` decision. No recognizer: the node's timer routes to default."""
        navigation = self.worker.navigation
        if navigation is None or self.fan is None:
            return
        self.route_decided = False
        self.navigation_tap = self.fan.tap()
        if navigation.open(self.call_id, self.navigation_tap):
            self.worker.routing[self.call_id] = self
        else:
            self._stop_route_listening()

    def _stop_route_listening(self) -> None:
        if self.navigation_tap is not None:
            if self.worker.navigation is not None:
                self.worker.navigation.finish(self.call_id)
            self.navigation_tap.close()
            self.navigation_tap = None

    def on_navigation(self, event: StreamEvent) -> None:
        segment = event.segment
        if segment is None or not segment.final or self.route_decided:
            return
        self.route_decided = True
        decision = decide([segment], self.worker.config.asr.grammar.table, Thresholds())
        log.info(
            "call %s: speech route %s %s (%.2f)", self.call_id, decision.action, decision.target, decision.confidence
        )
        self._stop_route_listening()
        self.feed(
            ev.SpeechRoute(
                action=decision.action,
                target=decision.target,
                keyword=decision.keyword or "",
                confidence=decision.confidence,
            )
        )

    def _record(self, kind: str, media: pj.AudioMedia) -> None:
        leg = "" if kind == "caller" else kind
        path = recording_path(self.settings.recordings_dir, self.call_id, self.started, leg=leg)
        self.recorders[kind] = Engine.record(path, media)
        self.recording_files[kind] = path

    def _close_recorder(self, kind: str) -> None:
        recorder = self.recorders.pop(kind, None)
        if recorder is not None:
            del recorder  # the C++ destructor closes the file and writes the WAV sizes

    def _start_timer(self, action: act.StartTimer) -> None:
        loop = asyncio.get_running_loop()
        self.timers[action.name] = loop.call_later(action.seconds, self._timer_fired, action.name)

    def _timer_fired(self, name: str) -> None:
        self.timers.pop(name, None)
        self.feed(ev.TimerFired(name))

    def _cancel_timer(self, action: act.CancelTimer) -> None:
        handle = self.timers.pop(action.name, None)
        if handle is not None:
            handle.cancel()

    def _set_field(self, action: act.SetTicketField) -> None:
        self.fields[action.name] = action.value
        if action.name == act.FIELD_SATISFACTION:
            self.worker.count(**{f"voice.rating.{action.value}": 1})
        self._enqueue_io(lambda: self._amend_field(action.name, action.value))

    def _enqueue(self, action: act.EnqueueCall) -> None:
        self.queued_at = utcnow()
        self._enqueue_io(lambda: self._intake(action.queue, action.priority))

    def _query_position(self, action: act.QueryPosition) -> None:
        self._enqueue_io(lambda: self._position(action.queue))

    def _dequeue(self, action: act.Dequeue) -> None:
        self._drop_agent_leg()
        self._enqueue_io(lambda: self._abandon(action.reason))

    def _bridge(self, _: act.Bridge) -> None:
        agent = self.agent_leg.media if self.agent_leg else None
        if agent is None:
            raise MediaGone("a leg of the bridge has no active audio")
        self._stop_prompt()
        self._record("agent", agent)
        self._connect_bridge()
        self.bridged = True
        log.info("call %s bridged: ticket %s, agent %s", self.call_id, self.ticket_id, self.agent)
        speech = self.worker.speech
        if speech is not None and not self.worker.config.asr.after_answer:
            speech.finish(self.call_id)
        elif speech is not None and self.transcribed_live:
            self._transcribe_agent(speech, agent)
        self._enqueue_io(lambda: self._history("bridged", agent=self.agent or ""))

    def _transcribe_agent(self, speech: LiveSpeech, media: pj.AudioMedia) -> None:
        """Both sides of the conversation, labelled: the agent's leg gets a port and a stream too."""
        self.agent_live = self.worker.engine.live_audio(
            media, f"live-{self.call_id}-a", self.settings.live_audio_frames
        )
        stream_id = self.call_id + AGENT_STREAM
        if speech.open(stream_id, self.agent_live):
            self.worker.listening[stream_id] = self

    def _stop_transcribing_agent(self) -> None:
        if self.agent_live is None:
            return
        if self.worker.speech is not None:
            self.worker.speech.finish(self.call_id + AGENT_STREAM)
        Engine.destroy_port(self.agent_live)
        self.agent_live = None

    def _hang_up(self, action: act.HangUp) -> None:
        self._stop_prompt()
        self._drop_agent_leg()
        self._hang_up_caller()

    @property
    def _caller_media(self) -> pj.AudioMedia | None:
        return self.leg.media if self.leg is not None else None

    def _hang_up_caller(self) -> None:
        if self.leg is not None:
            self.leg.hang_up()

    # --- the agent leg -----------------------------------------------------------------------

    def dial_agent(self, ticket_id: str, agent: str, uri: str) -> None:
        if self.closed or ticket_id != self.ticket_id or self.agent_leg is not None:
            return
        self.agent = agent
        self.agent_dropped_because = None
        self.agent_leg = self.worker.engine.dial(uri, self, label=f"agent-{self.call_id}")
        loop = asyncio.get_running_loop()
        self.agent_timer = loop.call_later(self.settings.agent_answer_timeout, self._agent_no_answer)
        self._enqueue_io(lambda: self._history("agent_dialled", agent=agent))

    def _agent_state(self, state: int, status: int) -> None:
        if state == pj.PJSIP_INV_STATE_EARLY and self.agent and self.ticket_id:
            agent, ticket_id = self.agent, self.ticket_id
            self._enqueue_io(lambda: self._screen_pop(agent, ticket_id))
        elif state == pj.PJSIP_INV_STATE_CONFIRMED:
            self._cancel_agent_timer()
            self._enqueue_io(lambda: self._history("agent_answered", agent=self.agent or ""))
            self.feed(ev.AgentAnswered())
        elif state == pj.PJSIP_INV_STATE_DISCONNECTED:
            self._cancel_agent_timer()
            self.agent_leg = None
            if self.bridged:
                self.bridged = False
                self._close_recorder("agent")
                self._stop_transcribing_agent()
                self.feed(ev.AgentHungUp())
            elif not self.closed:
                self._requeue(self.agent_dropped_because or f"agent_failed_{status}")

    def _agent_no_answer(self) -> None:
        self.agent_timer = None
        if self.agent_leg is not None and not self.bridged:
            self.agent_dropped_because = AGENT_NO_ANSWER
            self._drop_agent_leg()

    def _requeue(self, reason: str) -> None:
        """The agent's phone did not answer: the caller goes back ahead of later callers."""
        agent, ticket_id = self.agent, self.ticket_id
        self.agent = None
        if agent and ticket_id:
            self._enqueue_io(lambda: self._release_to_queue(ticket_id, agent, reason))

    def _cancel_agent_timer(self) -> None:
        if self.agent_timer is not None:
            self.agent_timer.cancel()
            self.agent_timer = None

    def _drop_agent_leg(self) -> None:
        self._cancel_agent_timer()
        if self.agent_leg is not None:
            self.agent_leg.hang_up()

    # --- the end -----------------------------------------------------------------------------

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop_prompt()
        self._drop_agent_leg()
        for handle in self.timers.values():
            handle.cancel()
        self.timers.clear()
        for kind in list(self.recorders):
            self._close_recorder(kind)
        if self.worker.speech is not None:
            self.worker.speech.finish(self.call_id)  # the last frames go first
        self._stop_route_listening()
        self._stop_transcribing_agent()
        if self.live is not None:
            Engine.destroy_port(self.live)
            stats = self.live.stats
            self.live = None
            self._enqueue_io(lambda: self.worker.link.frame_stats(self.call_id, stats))
        outcome = self.machine.outcome or "unknown"
        self._enqueue_io(lambda: self._settle(outcome))
        self._io.put_nowait(None)
        self._io_closed = True
        self.worker.forget(self)
        # Not inside the leg's own callback: on the next loop turn.
        asyncio.get_running_loop().call_soon(self._release_legs)

    def shutdown(self) -> None:
        """The worker is stopping: end this call as if the caller hung up, BYE included."""
        self.shutting_down = True
        self._hang_up_caller()
        self.feed(ev.HungUp())

    def _release_legs(self) -> None:
        """Drop the pjsua2 Call objects: none may outlive libDestroy (it aborts at exit)."""
        self.leg = None
        if self.agent_leg is not None and self.agent_leg.disconnected:
            self.agent_leg = None

    # --- ordered Redis I/O for this call -------------------------------------------------------

    def _enqueue_io(self, job: Callable[[], Awaitable[None]]) -> None:
        if self._io_closed:
            # The call is over and its ordered work is done: a late result (the last utterance is
            # often recognized after the hang-up) still reaches the ticket.
            self.worker.tasks.spawn(self._run_one(job))
            return
        self._io.put_nowait(job)

    async def _run_one(self, job: Callable[[], Awaitable[None]]) -> None:
        try:
            await job()
        except (ServiceUnavailable, RedisError, OSError) as exc:
            self.worker.redis_trouble(self.call_id, exc)
        except GatewayError as exc:
            log.error("call %s: %s", self.call_id, exc)

    async def _run_io(self) -> None:
        while (job := await self._io.get()) is not None:
            await self._run_one(job)

    def _ticket(self, queue: str, priority: int) -> Ticket:
        attachments = [recording_attachment(self.recording_files["caller"])] if "caller" in self.recording_files else []
        phone = self.caller if self.caller.lstrip("+").isdigit() and 3 <= len(self.caller) <= 21 else None
        queue_priority = self.worker.config.queue(queue).priority
        return Ticket(
            id=new_ticket_id(utcnow()),
            channel="voice",
            message_id=self.call_id,
            citizen=Citizen(phone=phone),
            received_at=self.started,
            text=self.fields.get(act.FIELD_SPEECH_TEXT, ""),
            transcript=tuple(self.transcript[-200:]),
            route=self.fields.get(act.FIELD_ROUTE, ""),
            route_evidence=self.fields.get(act.FIELD_ROUTE_EVIDENCE, "")[:256],
            attachments=tuple(attachments),
            ivr_path="".join(self.machine.path)[:64],
            queue=queue,
            priority=max(queue_priority, priority),
            status="queued",
            voice=VoiceCall(
                worker=self.settings.worker_id, call_id=self.call_id, caller=self.caller, called=self.called
            ),
        )

    async def _intake(self, queue: str, priority: int) -> None:
        ticket = prefilled(self._ticket(queue, priority), self.transcript)
        await self.worker.link.track(self.settings.worker_id, ticket.id)
        result = await self.worker.queue.intake(ticket, f"worker:{self.settings.worker_id}")
        self.ticket_id = result.ticket_id
        self.worker.by_ticket[result.ticket_id] = self
        log.info(
            "call %s queued: ticket %s (%s) -> %s, priority %d",
            self.call_id,
            result.ticket_id,
            mask_phone(self.caller),
            ticket.queue,
            ticket.priority,
        )

    async def _position(self, queue: str) -> None:
        if self.ticket_id is None:
            return
        n = await self.worker.queue.position(self.ticket_id, queue)
        if not self.closed:
            self.feed(ev.Position(n))

    async def _abandon(self, reason: str) -> None:
        """Take the ticket out of its queue (caller gone or overflow); tell a seat that holds it.

        When the worker itself is stopping, the caller did not choose to leave: the ticket says
        so and a callback ticket is queued.
        """
        ticket_id = self.ticket_id
        if ticket_id is None:
            return
        if self.shutting_down:
            reason = "worker_shutdown"
        elif reason == act.DEQUEUE_ABANDONED:
            reason = "caller_hung_up"
        try:
            ticket = await self.worker.queue.get(ticket_id)
            await self.worker.queue.abandon(ticket_id, reason)
        except GatewayError:
            return
        if ticket.agent:
            await self.worker.link.tell_seat("revoke", ticket.agent, ticket_id, reason)
        self.worker.count(**{"voice.abandoned": 1})
        log.info("call %s abandoned: ticket %s (%s)", self.call_id, ticket_id, reason)
        if self.shutting_down:
            await self._callback({}, reason)

    async def _release_to_queue(self, ticket_id: str, agent: str, reason: str) -> None:
        if await self.worker.queue.release(ticket_id, agent, reason, "claimed"):
            log.info("call %s requeued: ticket %s, its place kept (%s, %s)", self.call_id, ticket_id, reason, agent)
            await self.worker.link.tell_seat("revoke", agent, ticket_id, reason)

    async def _screen_pop(self, agent: str, ticket_id: str) -> None:
        await self._history("agent_ringing", agent=agent)
        await self.worker.link.tell_seat("screen_pop", agent, ticket_id)

    async def _history(self, action: str, **detail: str) -> None:
        if self.ticket_id is not None:
            await self.worker.queue.note(self.ticket_id, f"worker:{self.settings.worker_id}", action, **detail)

    async def _amend_field(self, name: str, value: str) -> None:
        ticket_id = self.ticket_id
        if ticket_id is None:
            return  # not queued yet: the field goes into the ticket at intake

        def change(ticket: Ticket) -> Ticket:
            if name == act.FIELD_SATISFACTION:
                return ticket.model_copy(update={"satisfaction": value})
            if name == act.FIELD_SPEECH_TEXT and not ticket.text:
                return ticket.model_copy(update={"text": value})
            return ticket

        await self.worker.queue.amend(ticket_id, change, f"worker:{self.settings.worker_id}", f"set_{name}")

    async def _settle(self, outcome: str) -> None:
        """After the call: attach what was recorded, and turn a voice message into a callback."""
        files = {kind: path for kind, path in self.recording_files.items() if path.exists()}
        for path in files.values():
            await _closed(path)
        if self.ticket_id is not None:
            await self._attach(self.ticket_id, files)
        if outcome == "message":
            await self._callback(files, "voice_message")
        elif outcome == "abandoned" and self.ticket_id is not None:
            with contextlib.suppress(GatewayError):
                ticket = await self.worker.queue.get(self.ticket_id)
                if ticket.status in ("queued", "offered") or (ticket.status == "claimed" and not self.bridged):
                    await self._abandon(act.DEQUEUE_ABANDONED)
        if self.queued_at is not None and self.ticket_id is not None:
            waited = int((utcnow() - self.queued_at).total_seconds() * 1000)
            self.worker.count(**{"voice.wait_ms": waited, "voice.waits": 1})
        if self.ticket_id is not None and self.asr_missed and "caller" in files:
            await self.worker.link.add_pending(self.ticket_id, files["caller"], self.asr_missed)
            # The ticket says why its text comes later: transcribed from the recording after the call.
            await self._history("asr_after_call", reason=self.asr_missed)
        if self.ticket_id is not None:
            await self.worker.link.untrack(self.settings.worker_id, self.ticket_id)
            self.worker.by_ticket.pop(self.ticket_id, None)

    async def _attach(self, ticket_id: str, files: dict[str, Path]) -> None:
        extra = [recording_attachment(path, wav_seconds(path)) for kind, path in files.items() if kind != "caller"]
        caller = files.get("caller")
        first = recording_attachment(caller, wav_seconds(caller)) if caller is not None else None

        def change(ticket: Ticket) -> Ticket:
            kept = [a for a in ticket.attachments if not (caller and a.path == str(caller))]
            if first is not None:
                kept.insert(0, first)
            return ticket.model_copy(update={"attachments": tuple(kept + extra)})

        with contextlib.suppress(GatewayError):
            await self.worker.queue.amend(ticket_id, change, f"worker:{self.settings.worker_id}", "recordings")

    async def _callback(self, files: dict[str, Path], reason: str) -> None:
        """Queue a callback ticket (its message id makes it one per call, whatever happens)."""
        base = self._ticket(self.flow.human_queue, 0)
        if self.ticket_id is not None:
            with contextlib.suppress(GatewayError):
                base = await self.worker.queue.get(self.ticket_id)
        if files:
            attachments = tuple(recording_attachment(path, wav_seconds(path)) for path in files.values())
            base = base.model_copy(update={"attachments": attachments})
        ticket = callback_ticket(base, utcnow(), self.settings.callback_priority, reason)
        result = await self.worker.queue.intake(ticket, f"worker:{self.settings.worker_id}")
        log.info("call %s: callback ticket %s queued (%s)", self.call_id, result.ticket_id, reason)


def prefilled(ticket: Ticket, segments: list[TranscriptSegment]) -> Ticket:
    """What an agent would type anyway, from what the caller said: the address (when the ticket
    has none yet), and a call-back number and a time into the notes."""
    update: dict[str, str] = {}
    notes = []
    for segment in segments:
        if not segment.final or not segment.text:
            continue
        found = extract(segment.text)
        if found.address and not ticket.address and "address" not in update:
            update["address"] = found.address[:256]
        if found.phone and found.phone not in ticket.notes:
            notes.append(f"回拨号码: {found.phone}")
        if found.time and found.time not in ticket.notes:
            notes.append(f"时间: {found.time}")
    if notes:
        update["notes"] = "\n".join([ticket.notes, *notes] if ticket.notes else notes)[:4000]
    return ticket.model_copy(update=update) if update else ticket


def _brief(exc: BaseException) -> str:
    """An error in a few words for a log line: its type and the first line of its message."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


def _has_speech_route(config: GatewayConfig) -> bool:
    return any(node.type == "speech_route" for ivr in config.ivr.values() for node in ivr.flow.nodes.values())


async def _closed(path: Path, timeout: float = 2.0) -> None:
    """Wait for PJSIP to close a recording: since 2.14 the bridge removes ports on its own clock
    thread, so a destroyed recorder finishes its file a tick or two later."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not header_complete(path) and loop.time() < deadline:
        await asyncio.sleep(0.02)
    if not header_complete(path):
        repair_header(path)


_HANDLERS: dict[type[Any], Callable[[CallSession, Any], None]] = {
    act.Play: CallSession._play,
    act.StopPrompt: CallSession._stop_prompt,
    act.StartRecording: CallSession._start_recording,
    act.StopRecording: CallSession._stop_recording,
    act.StartTimer: CallSession._start_timer,
    act.CancelTimer: CallSession._cancel_timer,
    act.SetTicketField: CallSession._set_field,
    act.EnqueueCall: CallSession._enqueue,
    act.QueryPosition: CallSession._query_position,
    act.Dequeue: CallSession._dequeue,
    act.Bridge: CallSession._bridge,
    act.HangUp: CallSession._hang_up,
}


class MediaWorker:
    def __init__(self, config: GatewayConfig, queue: TicketQueue, settings: WorkerSettings) -> None:
        self.config = config
        self.settings = settings
        self.queue = queue
        self.link = VoiceLink(queue)
        self.tasks = Tasks()
        self.engine = Engine(
            EngineSettings(
                host=settings.host,
                port=settings.port,
                max_calls=settings.calls_per_worker,
                poll_interval=settings.poll_interval,
                idle_poll_interval=settings.idle_poll_interval,
                rtp_port=settings.rtp_port,
                rtp_port_range=settings.rtp_port_range,
                native_live_audio=settings.native_live_audio,
                media_poll_ms=settings.media_poll_ms,
            ),
            self._incoming,
        )
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
                "pool": PoolSettings(workers=1, streams_per_worker=max(1, settings.calls_per_worker // 2)),
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
        self.lifeline = Lifeline(settings.worker_timeout, os.getppid(), 0.0)
        self._redis_trouble_told = False  # a Redis failure was logged; quiet until Redis answers again
        self.hostname = socket.gethostname()  # in the heartbeat: an id is one worker's on one machine

    @property
    def sip(self) -> str:
        return f"{self.settings.host}:{self.settings.port}"

    @property
    def callers(self) -> int:
        return len(self.sessions)

    @property
    def caller_capacity(self) -> int:
        """Each caller may need a second leg for its agent, so half the legs take callers."""
        return max(1, self.settings.calls_per_worker // 2)

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
        session = self.listening.get(event.call_id)
        if session is not None:
            session.on_speech(event)
        if event.closed:
            self.listening.pop(event.call_id, None)

    def _on_navigation(self, event: StreamEvent) -> None:
        session = self.routing.get(event.call_id)
        if session is not None:
            session.on_navigation(event)
        if event.closed:
            self.routing.pop(event.call_id, None)

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
        self.lifeline = Lifeline(self.settings.worker_timeout, self.lifeline.parent, time.monotonic())
        self._loops = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self._inbox(), name="inbox"),
        ]

    def _incoming(self, leg: Leg, request_uri: str) -> None:
        info = leg.getInfo()
        called = uri_user(request_uri) or uri_user(info.localUri)
        voice = self.config.voice
        flow_id = voice.numbers.get(called, voice.default_flow)
        if flow_id is None or flow_id not in self.config.ivr:
            log.info("call to unknown number %s refused (404)", mask_phone(called))
            leg.hang_up(SIP_NOT_FOUND)
            return
        if self.callers >= self.caller_capacity:
            self.count(**{"voice.rejected_full": 1})
            leg.hang_up(SIP_SERVICE_UNAVAILABLE)
            return
        session = CallSession(self, leg, self.config.ivr[flow_id], called)
        leg.listener = session
        leg.label = f"caller-{session.call_id}"
        self.sessions[session.call_id] = session
        leg.accept(200)

    def forget(self, session: CallSession) -> None:
        self.sessions.pop(session.call_id, None)

    def count(self, **increments: int) -> None:
        self.tasks.spawn(self._count(increments))

    async def _count(self, increments: dict[str, int]) -> None:
        with contextlib.suppress(GatewayError, RedisError, OSError):  # counters are not worth a line
            await self.link.count(**increments)

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
            now = time.monotonic()
            lost_for = self.lifeline.lost_for(now)
            self.lifeline, verdict = self.lifeline.beat(problem is None, os.getppid(), now)
            if verdict is Verdict.REDIS_BACK:
                self._redis_trouble_told = False
                log.info("redis reachable again after %.1f s without a heartbeat", lost_for)
            elif verdict is Verdict.STOP_REDIS_LOST:
                self._give_up(
                    1, "redis unreachable for %.1f s (%s)", self.lifeline.lost_for(now), _brief(problem or Exception())
                )
                return
            elif verdict is Verdict.STOP_SUPERVISOR_GONE:
                self._give_up(0, "its supervisor (pid %d) is gone", self.lifeline.parent)
                return

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
            why + ": stopping with %d call(s); what cannot be settled now the core settles from Redis later",
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
        await self.tasks.drain()
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
        # Redis gone: the heartbeat stays and lapses, and the core settles what is left.
        with contextlib.suppress(GatewayError, RedisError, OSError):
            await self.link.retire(self.settings.worker_id)
