"""One caller's session: the translator between a call's legs and media and its IVR machine.

Engine callbacks (leg states, media, keys, a prompt's end), the worker's inbox (an agent to ring),
speech results and the session's timers become events for the call's `CallMachine`; the actions it
returns become engine calls and Redis work. What the call leaves behind is the call policy's
(`gateway.voice.policy`): the ticket's shape, the settlement. The session decides nothing itself:
it keeps the engine's handles and the facts the policy needs.

Everything runs on the loop thread. The call's Redis work runs in its own ordered I/O task, so the
machine is never blocked and the side effects happen in the order the machine asked for them. The
engine is `gateway.voice.media.MediaEngine`: pjsua2 in a worker, a fake in the fast tests
(`tests/voice/test_session.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from redis.exceptions import RedisError

from gateway.asr.navigation import Thresholds, decide
from gateway.asr.pool import StreamEvent
from gateway.errors import GatewayError, QueueFull, ServiceUnavailable
from gateway.ivr import actions as act
from gateway.ivr import events as ev
from gateway.ivr.flow import IvrConfig
from gateway.ivr.machine import CallMachine
from gateway.ticket import Ticket, TranscriptSegment, mask_phone, new_ticket_id, utcnow
from gateway.voice import policy
from gateway.voice.link import recording_attachment
from gateway.voice.media import Audio, CallLeg, Cancellable, LegState, LiveTap, MediaError
from gateway.voice.prompts import prompt_wav
from gateway.voice.recordings import recording_path
from gateway.voice.speech import FanOut, LiveSpeech, Tap
from gateway.voice.spool import PendingAsr
from gateway.voice.wav import header_complete, repair_header, wav_seconds

if TYPE_CHECKING:
    from gateway.voice.worker import MediaWorker

log = logging.getLogger("gateway.voice")

AGENT_STREAM = "-agent"  # the agent leg's recognition stream: the call id with this suffix
SIP_SERVER_ERROR = 500  # an agent leg that could not even be dialled ends like one refused with this
StoreFailure = (ServiceUnavailable, RedisError, OSError)
"""What a Redis step of a call may raise when the store is out of reach (or a queue is full)."""


def refusal_of(exc: BaseException) -> ev.Refusal:
    """Why the queue did not take a ticket: `queue_full` when the store answered so, else
    `unavailable` (Redis out of reach)."""
    return "queue_full" if isinstance(exc, QueueFull) else "unavailable"


class CallSession:
    """One caller: its machine, its legs and media, its ticket. Implements `LegListener`."""

    def __init__(self, worker: MediaWorker, leg: CallLeg, ivr: IvrConfig, caller: str, called: str) -> None:
        self.worker = worker
        self.settings = worker.settings
        self.engine = worker.engine
        self.leg: CallLeg | None = leg
        self.flow = ivr.flow
        self.machine = CallMachine(ivr.flow, ivr.calendars, agent_answer_seconds=self.settings.agent_answer_timeout)
        self.call_id = new_ticket_id(utcnow())
        self.caller = caller
        self.called = called
        self.started = utcnow()
        # Media: the engine's handles, kept until the engine is done with them.
        self.player: Audio | None = None
        self.plays = 0
        self.recorders: dict[str, Audio] = {}
        self.recording_files: dict[str, Path] = {}
        self.live: LiveTap | None = None
        self.timers: dict[str, Cancellable] = {}
        # What the call's ticket is made of (policy.CallFacts) and where it is.
        self.fields: dict[str, str] = {}
        self.transcript: list[TranscriptSegment] = []
        self.enqueued: tuple[str, int] | None = None  # the queue and priority the machine asked for
        self.ticket_id: str | None = None
        self.refusal: ev.Refusal | None = None  # why the queue did not take the ticket, if it did not
        self.queued_at: datetime | None = None
        # The agent leg.
        self.agent_leg: CallLeg | None = None
        self.agent: str | None = None
        self.bridged = False
        self.ever_bridged = False
        self.answered = False
        self.closed = False
        self.shutting_down = False
        # Speech.
        self.fan: FanOut | None = None
        self.agent_live: LiveTap | None = None
        self.dictation_tap: Tap | None = None
        self.navigation_tap: Tap | None = None
        self.route_decided = False
        self.transcribed_live = False
        self.asr_missed = ""  # why (part of) the call must be transcribed from its recording
        self._io: asyncio.Queue[Callable[[], Awaitable[None]] | None] = asyncio.Queue()
        self._io_task = worker.tasks.spawn(self._run_io())
        self._io_closed = False

    # --- events in ---------------------------------------------------------------------------

    def on_state(self, leg: CallLeg, state: LegState, status: int) -> None:
        if leg is self.leg:
            if state is LegState.DISCONNECTED:
                self.feed(ev.HungUp())
        elif leg is self.agent_leg:
            self._agent_state(state, status)

    def on_media(self, leg: CallLeg, media: Audio) -> None:
        if leg is self.leg and not self.answered:
            self.answered = True
            self._record("caller", media)
            self.live = self.engine.live_audio(media, f"live-{self.call_id}", self.settings.live_audio_frames)
            self._start_transcribing()
            self.worker.count(**{"voice.calls": 1})
            log.info("call %s answered: %s -> %s", self.call_id, mask_phone(self.caller), self.flow.id)
            self.feed(ev.Answered(now=utcnow(), caller=self.caller, called=self.called))
        elif leg is self.leg and not self.closed:
            self._reattach_caller(media)
        elif leg is self.agent_leg and self.bridged:
            self._connect_bridge()

    def on_digit(self, leg: CallLeg, digit: str) -> None:
        if leg is self.leg and digit in ev.DTMF_DIGITS:
            self.feed(ev.Digit(digit))

    def dial_agent(self, ticket_id: str, agent: str, uri: str) -> None:
        """The core asks (through the worker's inbox) to ring `agent` for this call's ticket."""
        if ticket_id == self.ticket_id:
            self.feed(ev.AgentOffered(agent, uri))

    def store_lost(self) -> None:
        """The worker lost Redis for good (its lifeline drains it): a caller still waiting for an
        agent would wait for nobody."""
        self.feed(ev.IntakeRefused("unavailable"))

    def shutdown(self) -> None:
        """The worker is stopping: end this call as if the caller hung up, BYE included."""
        self.shutting_down = True
        self._hang_up_caller()
        self.feed(ev.HungUp())

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

    def _feed_soon(self, event: ev.Event) -> None:
        """Feed `event` on the next loop turn: never from inside the actions of another one."""
        asyncio.get_running_loop().call_soon(self.feed, event)

    def _agent_state(self, state: LegState, status: int) -> None:
        if state is LegState.EARLY:
            self.feed(ev.AgentRinging())
        elif state is LegState.CONFIRMED:
            self._enqueue_io(lambda: self._history("agent_answered", agent=self.agent or ""))
            self.feed(ev.AgentAnswered())
        elif state is LegState.DISCONNECTED:
            self.agent_leg = None
            if self.bridged:
                self.bridged = False
                self._close_recorder("agent")
                self._stop_transcribing_agent()
                self.feed(ev.AgentHungUp())
            else:
                self.feed(ev.AgentFailed(status))

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

    # --- actions out -------------------------------------------------------------------------

    def _do(self, action: act.Action) -> None:
        handler = _HANDLERS[type(action)]
        try:
            handler(self, action)
        except (MediaError, OSError) as exc:
            # Fail closed: a media operation that fails ends the call; it never leaves it hanging.
            log.error("call %s: %s failed: %s", self.call_id, type(action).__name__, exc)
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

        self.player = self.engine.play(path, media, ended)

    def _stop_prompt(self, _: act.StopPrompt | None = None) -> None:
        if self.player is not None:
            self.engine.stop_player(self.player, self._caller_media)
            self.player = None

    def _start_recording(self, action: act.StartRecording) -> None:
        try:
            if self._caller_media is None:
                raise MediaError("the caller's leg has no audio")
            self._record(action.kind, self._caller_media)
        except (MediaError, OSError) as exc:
            # The recorder could not start (disk full, a file PJSIP refused): the machine moves on
            # as when a recorder stops by itself, with nothing recorded.
            log.error("call %s: %s recording did not start: %s", self.call_id, action.kind, exc)
            self._feed_soon(ev.RecordingFinished(None, 0.0))
        if action.kind == "navigation":
            self._listen_for_route()

    def _stop_recording(self, _: act.StopRecording) -> None:
        for kind in ("speech", "message", "navigation"):
            self._close_recorder(kind)
        self._stop_route_listening()

    def _start_timer(self, action: act.StartTimer) -> None:
        self.timers[action.name] = self.worker.scheduler.call_later(action.seconds, lambda: self._fired(action.name))

    def _fired(self, name: str) -> None:
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
        self._enqueue_io(lambda: self._amend(policy.with_field(action.name, action.value), f"set_{action.name}"))

    def _enqueue(self, action: act.EnqueueCall) -> None:
        self.queued_at = utcnow()
        self.enqueued = (action.queue, action.priority)
        self._enqueue_io(lambda: self._intake(action.queue, action.priority))

    def _query_position(self, action: act.QueryPosition) -> None:
        self._enqueue_io(lambda: self._position(action.queue))

    def _dequeue(self, action: act.Dequeue) -> None:
        self._enqueue_io(lambda: self._abandon(policy.abandon_reason(action.reason, self.shutting_down)))

    def _bridge(self, _: act.Bridge) -> None:
        agent = self.agent_leg.media if self.agent_leg else None
        if agent is None:
            raise MediaError("a leg of the bridge has no active audio")
        self._stop_prompt()
        self._record("agent", agent)
        self._connect_bridge()
        self.bridged = self.ever_bridged = True
        log.info("call %s bridged: ticket %s, agent %s", self.call_id, self.ticket_id, self.agent)
        speech = self.worker.speech
        if speech is not None and not self.worker.config.asr.after_answer:
            speech.finish(self.call_id)
        elif speech is not None and self.transcribed_live:
            self._transcribe_agent(speech, agent)
        self._enqueue_io(lambda: self._history("bridged", agent=self.agent or ""))

    def _dial_agent(self, action: act.DialAgent) -> None:
        self.agent = action.agent
        try:
            self.agent_leg = self.engine.dial(action.uri, self, label=f"agent-{self.call_id}")
        except MediaError as exc:
            # Not dialled at all: the machine hears of it as of a phone that refused.
            log.error("call %s: agent %s not dialled: %s", self.call_id, action.agent, exc)
            self._feed_soon(ev.AgentFailed(SIP_SERVER_ERROR))
            return
        self._enqueue_io(lambda: self._history("agent_dialled", agent=action.agent))

    def _drop_agent(self, _: act.DropAgent | None = None) -> None:
        if self.agent_leg is not None:
            self.agent_leg.hang_up()

    def _screen_pop(self, action: act.ScreenPop) -> None:
        ticket_id = self.ticket_id
        if ticket_id is not None:
            self._enqueue_io(lambda: self._pop_screen(action.agent, ticket_id))

    def _requeue(self, action: act.Requeue) -> None:
        ticket_id, self.agent = self.ticket_id, None
        if ticket_id is not None:
            self._enqueue_io(lambda: self._release_to_queue(ticket_id, action.agent, action.reason))

    def _hang_up(self, _: act.HangUp) -> None:
        self._stop_prompt()
        self._hang_up_caller()

    # --- media plumbing ------------------------------------------------------------------------

    @property
    def _caller_media(self) -> Audio | None:
        return self.leg.media if self.leg is not None else None

    def _hang_up_caller(self) -> None:
        if self.leg is not None:
            self.leg.hang_up()

    def _record(self, kind: str, media: Audio) -> None:
        leg = "" if kind == "caller" else kind
        path = recording_path(self.settings.recordings_dir, self.call_id, self.started, leg=leg)
        self.recorders[kind] = self.engine.record(path, media)
        self.recording_files[kind] = path

    def _close_recorder(self, kind: str) -> None:
        recorder = self.recorders.pop(kind, None)
        if recorder is not None:
            del recorder  # the engine finishes the file when the recorder goes (PJSIP: its destructor)

    def _reattach_caller(self, media: Audio) -> None:
        """A re-INVITE rebuilt the caller's stream, on a new bridge slot: connect everything again."""
        for kind, recorder in self.recorders.items():
            if kind != "agent":
                self.engine.connect(media, recorder)
        if self.live is not None:
            self.live.listen(media)
        if self.player is not None:
            self.engine.connect(self.player, media)
        if self.bridged:
            self._connect_bridge()

    def _connect_bridge(self) -> None:
        """Caller and agent hear each other; the agent is recorded. Safe to repeat after a re-INVITE
        (pjsua re-INVITEs the agent leg right after it answers, and the stream may move slots)."""
        caller, agent = self._caller_media, self.agent_leg.media if self.agent_leg else None
        if caller is None or agent is None:
            raise MediaError("a leg of the bridge has no active audio")
        self.engine.connect(caller, agent)
        self.engine.connect(agent, caller)
        if "agent" in self.recorders:
            self.engine.connect(agent, self.recorders["agent"])
        if self.agent_live is not None:
            self.agent_live.listen(agent)

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

    def _transcribe_agent(self, speech: LiveSpeech, media: Audio) -> None:
        """Both sides of the conversation, labelled: the agent's leg gets a port and a stream too."""
        self.agent_live = self.engine.live_audio(media, f"live-{self.call_id}-a", self.settings.live_audio_frames)
        stream_id = self.call_id + AGENT_STREAM
        if speech.open(stream_id, self.agent_live):
            self.worker.listening[stream_id] = self

    def _stop_transcribing_agent(self) -> None:
        if self.agent_live is None:
            return
        if self.worker.speech is not None:
            self.worker.speech.finish(self.call_id + AGENT_STREAM)
        self.engine.destroy_port(self.agent_live)
        self.agent_live = None

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

    # --- the end -----------------------------------------------------------------------------

    def _finish(self) -> None:
        if self.closed:
            return
        self.closed = True
        self._stop_prompt()
        self._drop_agent()  # a leg the machine no longer counts (its end was news to nobody) goes too
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
            self.engine.destroy_port(self.live)
            stats = self.live.stats
            self.live = None
            self._enqueue_io(lambda: self.worker.link.frame_stats(self.call_id, stats))
        outcome = self.machine.outcome
        self._enqueue_io(lambda: self._settle(outcome))
        self._io.put_nowait(None)
        self._io_closed = True
        self.worker.forget(self)
        # Not inside the leg's own callback: on the next loop turn.
        asyncio.get_running_loop().call_soon(self._release_legs)

    def _release_legs(self) -> None:
        """Drop the engine's legs: no pjsua2 Call may outlive libDestroy (it aborts at exit)."""
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
        except StoreFailure as exc:
            self.worker.redis_trouble(self.call_id, exc)
        except GatewayError as exc:
            log.error("call %s: %s", self.call_id, exc)

    async def _run_io(self) -> None:
        while (job := await self._io.get()) is not None:
            try:
                await self._run_one(job)
            finally:
                self._io.task_done()
        self._io.task_done()

    async def idle(self) -> None:
        """Until the call's Redis work asked for so far is done (the tests' way to wait for it),
        after what was handed to the next loop turn (a leg's end, an event fed soon)."""
        await asyncio.sleep(0)
        await self._io.join()

    @property
    def settled(self) -> asyncio.Task[None]:
        """The call's I/O task: done once the call is over and settled."""
        return self._io_task

    def _facts(self) -> policy.CallFacts:
        caller = self.recording_files.get("caller")
        return policy.CallFacts(
            call_id=self.call_id,
            worker_id=self.settings.worker_id,
            caller=self.caller,
            called=self.called,
            started=self.started,
            ivr_path="".join(self.machine.path),
            fields=dict(self.fields),
            transcript=tuple(self.transcript),
            recording=recording_attachment(caller) if caller is not None else None,
        )

    async def _intake(self, queue: str, priority: int) -> None:
        ticket = policy.draft_ticket(self._facts(), queue, priority, self.worker.config, new_ticket_id(utcnow()))
        # Tracked first, so the core settles the ticket if this worker dies. A failure here is the
        # intake's to tell (a connection gone stale with a Redis restart is retried there, once).
        with contextlib.suppress(*StoreFailure):
            await self.worker.link.track(self.settings.worker_id, ticket.id)
        try:
            result = await self.worker.file(ticket)
        except StoreFailure as exc:
            self.refusal = refusal_of(exc)
            if self.refusal == "unavailable":
                self.worker.redis_trouble(self.call_id, exc)
            log.info("call %s: not queued in %s (%s)", self.call_id, ticket.queue, self.refusal)
            self.feed(ev.IntakeRefused(self.refusal))  # ignored when the caller hung up meanwhile
            return
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

    async def _share_segment(self, segment: TranscriptSegment) -> None:
        """To the seat holding the ticket now; final segments also into the ticket itself."""
        if self.ticket_id is None:
            return  # not queued yet: the segments go into the ticket at intake
        await self.worker.link.publish_transcript(self.ticket_id, segment)
        if segment.final:
            # What the caller says while the call is up is scanned for sensitive words (triage).
            said = self.worker.queue.tell_said if segment.speaker == "caller" else None
            await self._amend(lambda t: policy.with_segment(t, segment), "transcript", said)

    async def _amend(
        self, change: Callable[[Ticket], Ticket], action: str, also: Callable[[Any, Ticket], None] | None = None
    ) -> None:
        if self.ticket_id is not None:  # not queued yet: the field goes into the ticket at intake
            await self.worker.queue.amend(self.ticket_id, change, self._actor, action, also)

    async def _abandon(self, reason: str) -> None:
        """Take the ticket out of its queue (caller gone or overflow); tell a seat that holds it."""
        ticket_id = self.ticket_id
        if ticket_id is None:
            return
        try:
            ticket = await self.worker.queue.get(ticket_id)
            await self.worker.queue.abandon(ticket_id, reason)
        except GatewayError as exc:
            if isinstance(exc, ServiceUnavailable):
                raise
            return
        if ticket.agent:
            await self.worker.link.tell_seat("revoke", ticket.agent, ticket_id, reason)
        self.worker.count(**{"voice.abandoned": 1})
        log.info("call %s abandoned: ticket %s (%s)", self.call_id, ticket_id, reason)

    async def _release_to_queue(self, ticket_id: str, agent: str, reason: str) -> None:
        if await self.worker.queue.release(ticket_id, agent, reason, "claimed"):
            log.info("call %s requeued: ticket %s, its place kept (%s, %s)", self.call_id, ticket_id, reason, agent)
            await self.worker.link.tell_seat("revoke", agent, ticket_id, reason)

    async def _pop_screen(self, agent: str, ticket_id: str) -> None:
        await self._history("agent_ringing", agent=agent)
        await self.worker.link.tell_seat("screen_pop", agent, ticket_id)

    async def _history(self, action: str, **detail: str) -> None:
        if self.ticket_id is not None:
            await self.worker.queue.note(self.ticket_id, self._actor, action, **detail)

    @property
    def _actor(self) -> str:
        return f"worker:{self.settings.worker_id}"

    async def _settle(self, outcome: str | None) -> None:
        """After the call: the recordings into its ticket, then what `policy.settlement` says
        (abandon a waiting ticket, a callback ticket). Each step on its own: one that fails (Redis
        out of reach) does not keep the next from running, and the callback is spooled then."""
        files = {kind: path for kind, path in self.recording_files.items() if path.exists()}
        for path in files.values():
            await _closed(path)
        # The session's own record of a refusal: the machine has none when the caller hung up first.
        plan = policy.settlement(
            outcome,
            has_ticket=self.ticket_id is not None,
            refused=self.machine.refused or self.refusal,
            shutting_down=self.shutting_down,
        )
        reachable = not self.worker.store_lost
        if reachable and self.ticket_id is not None:
            await self._step(self._attach(self.ticket_id, files))
        if reachable and plan.abandon is not None:
            await self._step(self._abandon_if_waiting(plan.abandon))
        if plan.callback is not None:
            await self._callback(files, plan.callback)
        if self.queued_at is not None and self.ticket_id is not None:
            waited = int((utcnow() - self.queued_at).total_seconds() * 1000)
            self.worker.count(**{"voice.wait_ms": waited, "voice.waits": 1})
        if reachable and self.ticket_id is not None and self.asr_missed and "caller" in files:
            await self._step(self._transcribe_later(self.ticket_id, files["caller"]))
        if self.ticket_id is not None:
            self.worker.by_ticket.pop(self.ticket_id, None)
            if reachable:
                await self._step(self.worker.link.untrack(self.settings.worker_id, self.ticket_id))

    async def _step(self, step: Awaitable[None]) -> None:
        try:
            await step
        except StoreFailure as exc:
            self.worker.redis_trouble(self.call_id, exc)
        except GatewayError as exc:
            log.error("call %s: %s", self.call_id, exc)

    async def _abandon_if_waiting(self, reason: str) -> None:
        assert self.ticket_id is not None
        ticket = await self.worker.queue.get(self.ticket_id)
        if policy.still_waiting(ticket.status, self.ever_bridged):
            await self._abandon(reason)

    async def _transcribe_later(self, ticket_id: str, recording: Path) -> None:
        await self.worker.link.add_pending(ticket_id, recording, self.asr_missed)
        # The ticket says why its text comes later: transcribed from the recording after the call.
        await self._history("asr_after_call", reason=self.asr_missed)

    async def _attach(self, ticket_id: str, files: dict[str, Path]) -> None:
        caller, others = _attachments(files)
        await self.worker.queue.amend(ticket_id, policy.with_recordings(caller, others), self._actor, "recordings")

    async def _callback(self, files: dict[str, Path], reason: str) -> None:
        """The callback ticket: filed, or kept in the worker's spool until the store takes it."""
        base = await self._stored_ticket()
        if files:
            caller, others = _attachments(files)
            base = base.model_copy(update={"attachments": (*([caller] if caller else []), *others)})
        own = self.ticket_id is None  # no ticket of its own: the callback is the call's one ticket
        ticket = policy.callback_ticket(base, utcnow(), self.settings.callback_priority, reason, the_calls_own=own)
        pending = None
        if own and self.asr_missed and "caller" in files:
            pending = PendingAsr(str(files["caller"]), self.asr_missed)
        await self.worker.deliver(self.call_id, ticket, pending, reason)

    async def _stored_ticket(self) -> Ticket:
        """The call's ticket as stored, or (no ticket, or the store out of reach) as it would be."""
        if self.ticket_id is not None and not self.worker.store_lost:
            with contextlib.suppress(*StoreFailure, GatewayError):
                return await self.worker.queue.get(self.ticket_id)
        queue, priority = self.enqueued or (self.flow.human_queue, 0)
        return policy.draft_ticket(self._facts(), queue, priority, self.worker.config, new_ticket_id(utcnow()))


def _attachments(files: dict[str, Path]) -> tuple[Any, tuple[Any, ...]]:
    """The caller's recording and the others (message, speech, agent), with their durations."""
    caller = files.get("caller")
    first = recording_attachment(caller, wav_seconds(caller)) if caller is not None else None
    others = tuple(recording_attachment(path, wav_seconds(path)) for kind, path in files.items() if kind != "caller")
    return first, others


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
    act.DialAgent: CallSession._dial_agent,
    act.DropAgent: CallSession._drop_agent,
    act.ScreenPop: CallSession._screen_pop,
    act.Requeue: CallSession._requeue,
    act.HangUp: CallSession._hang_up,
}
