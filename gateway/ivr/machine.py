"""The IVR call state machine: events in, actions out, no I/O.

Everything that decides what happens on a call lives in this module:

* ``Phase`` — where the call is (a node type plus the step inside that node).
* ``TRANSITIONS[phase][event type]`` — the handler that reacts to an event. A pair missing from the
  table is a documented no-op: the event is late or irrelevant in that phase (a ``TimerFired`` for a
  cancelled timer, ``PromptFinished`` after a barge-in, a key press while queued). Such events return
  ``[]`` and are counted in ``CallMachine.ignored``; an object that is not an event at all is a bug in
  the caller and raises ``TypeError``.
* ``ENTER[node type]`` — what entering a node does.

One ``CallMachine`` serves one call. The adapter feeds events in arrival order and executes the
returned actions in list order (see ``gateway.ivr.actions`` for the media contract). Once the call is
finished every event returns ``[]``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar

from gateway.ivr.actions import (
    DEQUEUE_ABANDONED,
    DEQUEUE_OVERFLOW,
    FIELD_ROUTE,
    FIELD_ROUTE_EVIDENCE,
    FIELD_SATISFACTION,
    FIELD_SPEECH_CONFIDENCE,
    FIELD_SPEECH_TEXT,
    REASON_AGENT_ENDED,
    REASON_FLOW_END,
    REASON_INTERNAL_ERROR,
    REASON_SURVEY_DONE,
    REQUEUE_FAILED,
    REQUEUE_NO_ANSWER,
    Action,
    Bridge,
    CancelTimer,
    Dequeue,
    DialAgent,
    DropAgent,
    EnqueueCall,
    HangUp,
    Play,
    QueryPosition,
    RecordingKind,
    Requeue,
    ScreenPop,
    SetTicketField,
    StartRecording,
    StartTimer,
    StopPrompt,
    StopRecording,
)
from gateway.ivr.calendar import Calendar, is_open
from gateway.ivr.events import (
    EVENT_TYPES,
    AgentAnswered,
    AgentFailed,
    AgentHungUp,
    AgentOffered,
    AgentRinging,
    Answered,
    Digit,
    Event,
    HungUp,
    IntakeRefused,
    Position,
    PromptFinished,
    RecordingFinished,
    Refusal,
    SpeechResult,
    SpeechRoute,
    TimerFired,
)
from gateway.ivr.flow import (
    BusinessHoursNode,
    CollectSpeechNode,
    Flow,
    HangupNode,
    MenuNode,
    PlayNode,
    QueueNode,
    RecordMessageNode,
    SatisfactionNode,
    SpeechRouteNode,
    calendar_problems,
    raise_problems,
)


class Phase(StrEnum):
    """Where the call is: ``<node type>_<step>``; the value is what ``CallMachine.state`` shows."""

    IDLE = "idle"  # not answered yet
    PLAY = "play"
    MENU_PROMPT = "menu_prompt"  # menu / invalid / timeout prompt playing
    MENU_WAIT = "menu_wait"  # prompt done, input timer running
    SPEECH_PROMPT = "speech_prompt"
    SPEECH_LISTEN = "speech_listen"  # recording + ASR running
    SPEECH_FLUSH = "speech_flush"  # recording stopped, waiting briefly for the final ASR text
    ROUTE_PROMPT = "route_prompt"  # navigation prompt playing
    ROUTE_LISTEN = "route_listen"  # navigation recording running, waiting for the adapter's SpeechRoute
    ROUTE_CONFIRM_PROMPT = "route_confirm_prompt"  # "您要办理的是住房业务吗？" playing
    ROUTE_CONFIRM_WAIT = "route_confirm_wait"  # confirm prompt done, confirm timer running
    MESSAGE_PROMPT = "message_prompt"
    MESSAGE_RECORD = "message_record"
    QUEUED = "queued"
    BRIDGED = "bridged"  # talking to an agent
    SURVEY_PROMPT = "survey_prompt"
    SURVEY_WAIT = "survey_wait"
    GOODBYE = "goodbye"  # hangup node's prompt playing
    DONE = "done"


HUMAN_KEY_PHASES = frozenset(Phase) - {
    Phase.IDLE,
    Phase.QUEUED,
    Phase.BRIDGED,
    Phase.SURVEY_PROMPT,
    Phase.SURVEY_WAIT,
    Phase.DONE,
}
"""Phases in which the human key queues the caller (一键直达人工)."""

# Final outcomes (CallMachine.outcome once finished).
OUTCOME_COMPLETED = "completed"  # an agent answered
OUTCOME_MESSAGE = "message"  # no agent, but the caller left a voice message / spoken request: call back
OUTCOME_HANGUP = "hangup"  # the flow ended the call (hangup node)
OUTCOME_ABANDONED = "abandoned"  # the caller hung up first
OUTCOME_ERROR = "error"  # the core failed; the call was hung up (see CallMachine.error)

# Timer kinds; a timer's name is "<kind>#<sequence>" and is never reused within a call.
TIMER_INPUT = "input.timeout"
TIMER_SPEECH_MAX = "speech.max"
TIMER_SPEECH_FLUSH = "speech.flush"
TIMER_MESSAGE_MAX = "message.max"
TIMER_ROUTE_LISTEN = "route.listen"
TIMER_ROUTE_CONFIRM = "route.confirm"
TIMER_POSITION = "queue.position"
TIMER_MAX_WAIT = "queue.max_wait"
TIMER_AGENT_RING = "agent.ring"

_EVENT_TYPES = frozenset(EVENT_TYPES)
_N = TypeVar("_N")


class CallMachine:
    """The IVR of one call. ``handle(event) -> list[Action]`` is the whole interface."""

    def __init__(
        self,
        flow: Flow,
        calendars: Mapping[str, Calendar],
        *,
        asr_flush_seconds: float = 2.0,
        agent_answer_seconds: float | None = None,
    ) -> None:
        """``asr_flush_seconds``: how long to wait for the final ASR text after stopping a recording;
        ``agent_answer_seconds``: how long an agent's phone may ring (``[voice] agent_answer_timeout``;
        None: until the call leaves the queue)."""
        problems = list(calendar_problems(flow, calendars))
        if problems:
            raise_problems("CallMachine", problems)
        self._flow = flow
        self._calendars = dict(calendars)
        self._human_node = flow.human_node_id
        self._flush_seconds = asr_flush_seconds
        self._ring_seconds = agent_answer_seconds
        self._phase = Phase.IDLE
        self._node_id: str | None = None
        self._answered_at: datetime | None = None
        self._playing: str | None = None  # prompt id the adapter is playing, as far as we know
        self._recording: RecordingKind | None = None
        self._timers: dict[str, str] = {}  # armed timer name -> kind
        self._timer_seq = 0
        self._retries = 0
        self._path: list[str] = []
        self._queue_node: str | None = None  # the queue node the call waits or waited in
        self._agent_answered = False
        self._agent: str | None = None  # the agent whose leg is up (ringing or talking)
        self._agent_dropped: str | None = None  # why the machine dropped that ringing leg (requeue reason)
        self._refused: Refusal | None = None  # the last IntakeRefused reason
        self._message_left = False
        self._final_outcome: str | None = None
        self._rating: str | None = None
        self._route_decision: SpeechRoute | None = None  # a confirm decision awaiting the caller's key
        self._ignored = 0
        self._error: Exception | None = None

    # --- read-only view ------------------------------------------------------------------------

    @property
    def flow(self) -> Flow:
        return self._flow

    @property
    def state(self) -> Phase:
        return self._phase

    @property
    def node_id(self) -> str | None:
        """The current (after finishing: the last) node; None before ``Answered``."""
        return self._node_id

    @property
    def path(self) -> list[str]:
        """Keys the IVR acted on, in order (menu choices, the human key, ``#``, the rating); a copy."""
        return list(self._path)

    @property
    def finished(self) -> bool:
        return self._phase is Phase.DONE

    @property
    def outcome(self) -> str | None:
        """Final ``OUTCOME_*`` once finished; before that ``queued:<q>``, ``bridged:<q>`` or None."""
        if self._phase is Phase.DONE:
            return self._final_outcome
        if self._phase is Phase.QUEUED:
            return f"queued:{self._queue().queue}"
        if self._agent_answered:
            return f"bridged:{self._queue().queue}"
        return None

    @property
    def rating(self) -> str | None:
        return self._rating

    @property
    def refused(self) -> Refusal | None:
        """Why the queue last refused the call (``IntakeRefused``), or None: the adapter's settlement
        files a callback ticket for a refused caller who has no ticket of their own."""
        return self._refused

    @property
    def ignored(self) -> int:
        """How many events had no transition in their phase (late/stale/irrelevant), for metrics."""
        return self._ignored

    @property
    def error(self) -> Exception | None:
        """The exception that made the machine fail closed (outcome ``error``); the adapter logs it."""
        return self._error

    # --- the interface -------------------------------------------------------------------------

    def handle(self, event: Event) -> list[Action]:
        """Feed one event; return the actions to execute, in order."""
        if type(event) not in _EVENT_TYPES:
            raise TypeError(f"not an IVR event: {event!r}")
        if self._phase is Phase.DONE:
            return []
        handler = TRANSITIONS[self._phase].get(type(event))
        if handler is None:
            return self._ignore()
        try:
            return handler(self, event)
        except Exception as exc:  # fail closed: a core bug hangs up this call instead of wedging it
            return self._fail(exc)

    # --- helpers: media, timers, nodes ---------------------------------------------------------

    def _ignore(self) -> list[Action]:
        self._ignored += 1
        return []

    def _play(self, prompt: str, *, barge_in: bool = True, params: tuple[tuple[str, str], ...] = ()) -> Play:
        self._playing = prompt
        return Play(prompt, barge_in, params)

    def _prompt_ended(self, event: PromptFinished) -> bool:
        """Accept the end of the prompt we started; anything else is a stale report."""
        if self._playing is None or event.prompt_id != self._playing:
            return False
        self._playing = None
        return True

    def _start_timer(self, kind: str, seconds: float) -> StartTimer:
        self._timer_seq += 1
        name = f"{kind}#{self._timer_seq}"
        self._timers[name] = kind
        return StartTimer(name, seconds)

    def _take_timer(self, event: TimerFired) -> str | None:
        """The kind of an armed timer that just fired, or None for stale/unknown names."""
        return self._timers.pop(event.name, None)

    def _start_recording(self, kind: RecordingKind, max_seconds: float, silence: float | None) -> StartRecording:
        self._recording = kind
        return StartRecording(kind, max_seconds, silence)

    def _leave(self, *, stop_prompt: bool = True) -> list[Action]:
        """Undo what the current step started: its prompt, recording and timers."""
        actions: list[Action] = []
        if self._playing is not None and stop_prompt:
            actions.append(StopPrompt())
        self._playing = None
        if self._recording is not None:
            actions.append(StopRecording())
            self._recording = None
        actions.extend(CancelTimer(name) for name in self._timers)
        self._timers.clear()
        return actions

    def _dequeue(self, reason: str) -> list[Action]:
        if self._phase is not Phase.QUEUED:
            return []
        return [Dequeue(self._queue().queue, reason)]

    def _release_agent(self) -> list[Action]:
        """The call leaves the agent: drop a phone that rings or talks (its end needs no answer)."""
        if self._agent is None:
            return []
        dropped_already = self._agent_dropped is not None  # its ring timer ran out: DropAgent was sent
        self._agent = self._agent_dropped = None
        return [] if dropped_already else [DropAgent()]

    def _cancel_timers(self, kind: str) -> list[Action]:
        names = [name for name, armed in self._timers.items() if armed == kind]
        for name in names:
            del self._timers[name]
        return [CancelTimer(name) for name in names]

    def _node(self, kind: type[_N]) -> _N:
        assert self._node_id is not None, "no current node before Answered"
        node = self._flow.nodes[self._node_id]
        assert isinstance(node, kind), f"node {self._node_id!r} is not a {kind.__name__}"
        return node

    def _queue(self) -> QueueNode:
        assert self._queue_node is not None, "never queued"
        node = self._flow.nodes[self._queue_node]
        assert isinstance(node, QueueNode)
        return node

    def _enter(self, node_id: str) -> list[Action]:
        self._node_id = node_id
        self._retries = 0
        node = self._flow.nodes[node_id]
        return ENTER[type(node)](self, node)

    def _finish(self, *, caller_left: bool) -> None:
        self._phase = Phase.DONE
        if self._agent_answered:
            self._final_outcome = OUTCOME_COMPLETED
        elif self._message_left:
            self._final_outcome = OUTCOME_MESSAGE
        else:
            self._final_outcome = OUTCOME_ABANDONED if caller_left else OUTCOME_HANGUP

    def _hang_up(self, reason: str) -> list[Action]:
        actions = [*self._leave(), HangUp(reason)]
        self._finish(caller_left=False)
        return actions

    def _fail(self, exc: Exception) -> list[Action]:
        self._error = exc
        actions = [
            *self._leave(),
            *self._dequeue(DEQUEUE_ABANDONED),
            *self._release_agent(),
            HangUp(REASON_INTERNAL_ERROR),
        ]
        self._phase = Phase.DONE
        self._final_outcome = OUTCOME_ERROR
        return actions

    def _to_human(self, digit: str) -> list[Action]:
        self._path.append(digit)
        return [*self._leave(), *self._enter(self._human_node)]

    # --- node entry (ENTER table) --------------------------------------------------------------

    def _enter_play(self, node: PlayNode) -> list[Action]:
        """Play the prompt."""
        self._phase = Phase.PLAY
        return [self._play(node.prompt)]

    def _enter_menu(self, node: MenuNode) -> list[Action]:
        """Play the menu prompt (keys barge in)."""
        self._phase = Phase.MENU_PROMPT
        return [self._play(node.prompt)]

    def _enter_speech(self, node: CollectSpeechNode) -> list[Action]:
        """Play the prompt; recording starts when it ends."""
        self._phase = Phase.SPEECH_PROMPT
        return [self._play(node.prompt)]

    def _enter_route(self, node: SpeechRouteNode) -> list[Action]:
        """Play the navigation prompt (only the human key barges in); listening starts when it ends."""
        self._phase = Phase.ROUTE_PROMPT
        self._route_decision = None
        return [self._play(node.prompt)]

    def _enter_message(self, node: RecordMessageNode) -> list[Action]:
        """Play the prompt; recording starts when it ends."""
        self._phase = Phase.MESSAGE_PROMPT
        return [self._play(node.prompt)]

    def _enter_queue(self, node: QueueNode) -> list[Action]:
        """`EnqueueCall`, hold prompt, position-announcement and max-wait timers."""
        self._phase = Phase.QUEUED
        self._queue_node = self._node_id
        actions: list[Action] = [
            EnqueueCall(node.queue, node.priority),
            self._play(node.hold_prompt, barge_in=False),
        ]
        if node.position_prompt is not None:
            actions.append(self._start_timer(TIMER_POSITION, node.position_interval_seconds))
        if node.max_wait_seconds is not None:
            actions.append(self._start_timer(TIMER_MAX_WAIT, node.max_wait_seconds))
        return actions

    def _enter_hours(self, node: BusinessHoursNode) -> list[Action]:
        """Enter `open` or `closed` at once, by the calendar at the answer time."""
        # Routing by the answer time (not "now") is what the caller expects and needs no clock.
        assert self._answered_at is not None, "business hours before Answered"
        opened = is_open(self._calendars[node.calendar], self._answered_at)
        return self._enter(node.open if opened else node.closed)

    def _enter_hangup(self, node: HangupNode) -> list[Action]:
        """Play the goodbye prompt, or `HangUp` at once when there is none."""
        if node.prompt is None:
            return self._hang_up(REASON_FLOW_END)
        self._phase = Phase.GOODBYE
        return [self._play(node.prompt)]

    def _enter_survey(self, node: SatisfactionNode) -> list[Action]:
        """Play the survey prompt (keys barge in)."""
        self._phase = Phase.SURVEY_PROMPT
        return [self._play(node.prompt)]

    # --- handlers (TRANSITIONS table) ----------------------------------------------------------

    def _on_answered(self, event: Answered) -> list[Action]:
        """Remember the answer time; enter the start node."""
        self._answered_at = event.now
        return self._enter(self._flow.start)

    def _on_caller_hung_up(self, event: HungUp) -> list[Action]:
        """Finish: `StopRecording`/`CancelTimer`s (and `Dequeue` if queued, `DropAgent` if a phone rings or talks)."""
        actions = [*self._leave(stop_prompt=False), *self._dequeue(DEQUEUE_ABANDONED), *self._release_agent()]
        self._finish(caller_left=True)
        return actions

    def _on_hung_up_in_goodbye(self, event: HungUp) -> list[Action]:
        """Finish as if the goodbye had ended: the flow was over anyway."""
        actions = self._leave(stop_prompt=False)
        self._finish(caller_left=False)
        return actions

    def _on_human_key_only(self, event: Digit) -> list[Action]:
        """Human key: `StopPrompt`/cleanup, then the human queue. Other keys are ignored."""
        if event.digit != self._flow.human_key:
            return self._ignore()
        return self._to_human(event.digit)

    def _on_play_done(self, event: PromptFinished) -> list[Action]:
        """Enter `next`."""
        if not self._prompt_ended(event):
            return self._ignore()
        return self._enter(self._node(PlayNode).next)

    def _on_keyed_prompt_done(self, event: PromptFinished) -> list[Action]:
        """Main prompt done: start the input timer. Invalid/timeout prompt done: replay the main prompt."""
        if not self._prompt_ended(event):
            return self._ignore()
        node = self._keyed_node()
        if event.prompt_id != node.prompt:
            return [self._play(node.prompt)]
        self._phase = Phase.MENU_WAIT if isinstance(node, MenuNode) else Phase.SURVEY_WAIT
        return [self._start_timer(TIMER_INPUT, node.timeout_seconds)]

    def _on_menu_digit(self, event: Digit) -> list[Action]:
        """Human key: queue. Option: its node. Other key: invalid prompt and retry, or `default`."""
        if event.digit == self._flow.human_key:
            return self._to_human(event.digit)
        self._path.append(event.digit)
        node = self._node(MenuNode)
        target = node.options.get(event.digit)
        if target is None:
            return self._retry(node, node.invalid_prompt)
        return [*self._leave(), *self._enter(target)]

    def _on_input_timeout(self, event: TimerFired) -> list[Action]:
        """No key in time: timeout prompt (menu) and retry; after `max_retries` give up."""
        if self._take_timer(event) is None:
            return self._ignore()
        node = self._keyed_node()
        return self._retry(node, node.timeout_prompt if isinstance(node, MenuNode) else None)

    def _on_survey_digit(self, event: Digit) -> list[Action]:
        """Rating key: `SetTicketField(satisfaction)`, then `next`. Other key (even the human key): retry."""
        self._path.append(event.digit)
        node = self._node(SatisfactionNode)
        rating = node.ratings.get(event.digit)
        if rating is None:
            return self._retry(node, node.invalid_prompt)
        self._rating = rating
        return [*self._leave(), SetTicketField(FIELD_SATISFACTION, rating), *self._after_survey(node)]

    def _on_speech_prompt_done(self, event: PromptFinished) -> list[Action]:
        """`StartRecording(speech)` and the `max_seconds` timer."""
        if not self._prompt_ended(event):
            return self._ignore()
        node = self._node(CollectSpeechNode)
        self._phase = Phase.SPEECH_LISTEN
        return [
            self._start_recording("speech", node.max_seconds, node.silence_seconds),
            self._start_timer(TIMER_SPEECH_MAX, node.max_seconds),
        ]

    def _on_speech_result(self, event: SpeechResult) -> list[Action]:
        """Final result: store the text, stop, enter `next`. Partial results are ignored."""
        if not event.final:
            return []
        node = self._node(CollectSpeechNode)
        return [*self._store_speech(event), *self._leave(), *self._enter(node.next)]

    def _on_speech_digit(self, event: Digit) -> list[Action]:
        """`#`: stop recording and wait for the final text. Human key: queue. Others ignored."""
        if event.digit == self._flow.human_key:
            return self._to_human(event.digit)
        if event.digit != "#":
            return self._ignore()
        self._path.append(event.digit)
        return self._stop_listening()

    def _on_speech_max(self, event: TimerFired) -> list[Action]:
        """`max_seconds` reached: stop recording and wait for the final text."""
        if self._take_timer(event) is None:
            return self._ignore()
        return self._stop_listening()

    def _on_speech_recording_ended(self, event: RecordingFinished) -> list[Action]:
        """The recorder stopped by itself: wait for the final text."""
        self._recording = None
        return self._stop_listening()

    def _on_flush_result(self, event: SpeechResult) -> list[Action]:
        """Final result: store the text and enter `next`."""
        return self._on_speech_result(event)

    def _on_flush_timeout(self, event: TimerFired) -> list[Action]:
        """No final text in time: enter `next` without it."""
        if self._take_timer(event) is None:
            return self._ignore()
        return [*self._leave(), *self._enter(self._node(CollectSpeechNode).next)]

    def _on_route_prompt_done(self, event: PromptFinished) -> list[Action]:
        """`StartRecording(navigation)` and the listen timer (`listen_seconds` plus the ASR flush)."""
        if not self._prompt_ended(event):
            return self._ignore()
        node = self._node(SpeechRouteNode)
        self._phase = Phase.ROUTE_LISTEN
        # The recorder stops at listen_seconds; a decision taken on that last audio still needs the
        # flush time to arrive, so the machine's own timer waits that much longer before `default`.
        return [
            self._start_recording("navigation", node.listen_seconds, node.silence_seconds),
            self._start_timer(TIMER_ROUTE_LISTEN, node.listen_seconds + self._flush_seconds),
        ]

    def _on_speech_route(self, event: SpeechRoute) -> list[Action]:
        """Accept (routed target): `SetTicketField(route)`, its node. Confirm: its confirm prompt. Else `default`."""
        node = self._node(SpeechRouteNode)
        target = event.target
        if event.action == "reject":
            return self._route_default(node, _evidence("reject", event))
        if target is None or target not in node.routes:
            return self._route_default(node, _evidence("unrouted", event))
        if event.action == "accept":
            return self._route_to(node, target, _evidence("accept", event, routed=True))
        return self._ask_to_confirm(node, target, event)

    def _on_route_listen_timeout(self, event: TimerFired) -> list[Action]:
        """No decision in time: `StopRecording`, `default` (evidence `timeout`)."""
        if self._take_timer(event) is None:
            return self._ignore()
        return self._route_default(self._node(SpeechRouteNode), "timeout")

    def _on_route_recording_ended(self, event: RecordingFinished) -> list[Action]:
        """The recorder stopped by itself: keep waiting for the decision (the listen timer still runs)."""
        # The grammar has heard everything there is; its decision (or the timer) ends the step.
        self._recording = None
        return []

    def _on_route_confirm_prompt_done(self, event: PromptFinished) -> list[Action]:
        """Start the `confirm_timeout_seconds` timer."""
        if not self._prompt_ended(event):
            return self._ignore()
        self._phase = Phase.ROUTE_CONFIRM_WAIT
        node = self._node(SpeechRouteNode)
        return [self._start_timer(TIMER_ROUTE_CONFIRM, node.confirm_timeout_seconds)]

    def _on_route_confirm_digit(self, event: Digit) -> list[Action]:
        """`confirm_key`: route to the target. Human key: queue. Any other key: `default`."""
        if event.digit == self._flow.human_key:
            return self._to_human(event.digit)
        self._path.append(event.digit)
        node = self._node(SpeechRouteNode)
        decision, target = self._take_decision()
        if event.digit == node.confirm_key:
            return self._route_to(node, target, _evidence("confirmed", decision, routed=True))
        return self._route_default(node, _evidence(f"declined key={event.digit}", decision))

    def _on_route_confirm_timeout(self, event: TimerFired) -> list[Action]:
        """No key in time: `default`."""
        if self._take_timer(event) is None:
            return self._ignore()
        decision, _ = self._take_decision()
        return self._route_default(self._node(SpeechRouteNode), _evidence("unconfirmed", decision))

    def _on_message_prompt_done(self, event: PromptFinished) -> list[Action]:
        """`StartRecording(message)` and the `max_seconds` timer."""
        if not self._prompt_ended(event):
            return self._ignore()
        node = self._node(RecordMessageNode)
        self._phase = Phase.MESSAGE_RECORD
        self._message_left = True
        return [
            self._start_recording("message", node.max_seconds, None),
            self._start_timer(TIMER_MESSAGE_MAX, node.max_seconds),
        ]

    def _on_message_digit(self, event: Digit) -> list[Action]:
        """`#`: `StopRecording`, enter `next`. Human key: queue (message kept). Others ignored."""
        if event.digit == self._flow.human_key:
            return self._to_human(event.digit)
        if event.digit != "#":
            return self._ignore()
        self._path.append(event.digit)
        return [*self._leave(), *self._enter(self._node(RecordMessageNode).next)]

    def _on_message_max(self, event: TimerFired) -> list[Action]:
        """`max_seconds` reached: `StopRecording`, enter `next`."""
        if self._take_timer(event) is None:
            return self._ignore()
        return [*self._leave(), *self._enter(self._node(RecordMessageNode).next)]

    def _on_message_recording_ended(self, event: RecordingFinished) -> list[Action]:
        """The recorder stopped by itself (no file: no message left); enter `next`."""
        self._recording = None
        if event.path is None:
            self._message_left = False
        return [*self._leave(), *self._enter(self._node(RecordMessageNode).next)]

    def _on_hold_done(self, event: PromptFinished) -> list[Action]:
        """Hold or position prompt done: replay the hold prompt (it loops while waiting)."""
        if not self._prompt_ended(event):
            return self._ignore()
        return [self._play(self._queue().hold_prompt, barge_in=False)]

    def _on_queue_timer(self, event: TimerFired) -> list[Action]:
        """Position timer: `QueryPosition` and re-arm. Max-wait timer: overflow. Ring timer: `DropAgent`."""
        kind = self._take_timer(event)
        if kind is None:
            return self._ignore()
        if kind == TIMER_MAX_WAIT:
            return self._overflow(self._queue().overflow)
        if kind == TIMER_AGENT_RING:
            # Its end (AgentFailed) requeues the call, with this reason rather than the phone's
            # answer to our own CANCEL (which once read as "agent_failed_200").
            self._agent_dropped = REQUEUE_NO_ANSWER
            return [DropAgent()]
        node = self._queue()
        return [QueryPosition(node.queue), self._start_timer(TIMER_POSITION, node.position_interval_seconds)]

    def _on_position(self, event: Position) -> list[Action]:
        """`Play(position_prompt, params=(("n", n),))` when n >= 1 and the node announces positions."""
        prompt = self._queue().position_prompt
        if prompt is None or event.n < 1:
            return self._ignore()
        return [self._play(prompt, barge_in=False, params=(("n", str(event.n)),))]

    def _on_intake_refused(self, event: IntakeRefused) -> list[Action]:
        """Leave the queue for `overflow` (store out of reach: the node's `unavailable` node, if any)."""
        self._refused = event.reason
        node = self._queue()
        unavailable = node.unavailable if event.reason == "unavailable" else None
        return self._overflow(unavailable or node.overflow)

    def _on_agent_offered(self, event: AgentOffered) -> list[Action]:
        """`DialAgent` and the ring timer, unless an agent's phone is already up."""
        if self._agent is not None:
            return self._ignore()
        self._agent, self._agent_dropped = event.agent, None
        actions: list[Action] = [DialAgent(event.agent, event.uri)]
        if self._ring_seconds is not None:
            actions.append(self._start_timer(TIMER_AGENT_RING, self._ring_seconds))
        return actions

    def _on_agent_ringing(self, event: AgentRinging) -> list[Action]:
        """`ScreenPop` on the ringing agent's seat."""
        if self._agent is None or self._agent_dropped is not None:
            return self._ignore()
        return [ScreenPop(self._agent)]

    def _on_agent_answered(self, event: AgentAnswered) -> list[Action]:
        """Stop hold audio and timers, `Bridge` (not a phone the machine already dropped)."""
        if self._agent_dropped is not None:
            return self._ignore()
        actions = self._leave()
        self._phase = Phase.BRIDGED
        self._agent_answered = True
        return [*actions, Bridge()]

    def _on_agent_failed(self, event: AgentFailed) -> list[Action]:
        """The phone did not take the call: `Requeue` (its place kept); the caller keeps waiting."""
        if self._agent is None:
            return self._ignore()
        agent, reason = self._agent, self._agent_dropped or REQUEUE_FAILED.format(status=event.status)
        self._agent = self._agent_dropped = None
        return [*self._cancel_timers(TIMER_AGENT_RING), Requeue(agent, reason)]

    def _on_agent_hung_up(self, event: AgentHungUp) -> list[Action]:
        """Enter the queue node's `satisfaction_node`, or `HangUp` when it has none."""
        self._agent = None
        survey = self._queue().satisfaction_node
        if survey is None:
            return self._hang_up(REASON_AGENT_ENDED)
        return self._enter(survey)

    def _on_goodbye_done(self, event: PromptFinished) -> list[Action]:
        """`HangUp`."""
        if not self._prompt_ended(event):
            return self._ignore()
        return self._hang_up(REASON_FLOW_END)

    # --- handler helpers -----------------------------------------------------------------------

    def _keyed_node(self) -> MenuNode | SatisfactionNode:
        assert self._node_id is not None
        node = self._flow.nodes[self._node_id]
        assert isinstance(node, MenuNode | SatisfactionNode)
        return node

    def _retry(self, node: MenuNode | SatisfactionNode, prompt: str | None) -> list[Action]:
        """Count a failed attempt: replay (``prompt`` first, if any) or give up after max_retries."""
        actions = self._leave()
        self._retries += 1
        if self._retries > node.max_retries:
            if isinstance(node, MenuNode):
                return [*actions, *self._enter(node.default)]
            return [*actions, *self._after_survey(node)]
        self._phase = Phase.MENU_PROMPT if isinstance(node, MenuNode) else Phase.SURVEY_PROMPT
        return [*actions, self._play(prompt or node.prompt)]

    def _after_survey(self, node: SatisfactionNode) -> list[Action]:
        if node.next is None:
            return self._hang_up(REASON_SURVEY_DONE)
        return self._enter(node.next)

    def _overflow(self, target: str) -> list[Action]:
        """Leave the queue (`Dequeue`, `DropAgent` for a ringing phone) for `target`."""
        return [*self._leave(), *self._dequeue(DEQUEUE_OVERFLOW), *self._release_agent(), *self._enter(target)]

    def _stop_listening(self) -> list[Action]:
        actions = self._leave()
        self._phase = Phase.SPEECH_FLUSH
        return [*actions, self._start_timer(TIMER_SPEECH_FLUSH, self._flush_seconds)]

    def _route_to(self, node: SpeechRouteNode, target: str, evidence: str) -> list[Action]:
        actions = self._leave()
        fields = [SetTicketField(FIELD_ROUTE, target), SetTicketField(FIELD_ROUTE_EVIDENCE, evidence)]
        return [*actions, *fields, *self._enter(node.routes[target])]

    def _route_default(self, node: SpeechRouteNode, evidence: str) -> list[Action]:
        # No FIELD_ROUTE: an unsure or out-of-domain request must never look routed to a department.
        actions = self._leave()
        return [*actions, SetTicketField(FIELD_ROUTE_EVIDENCE, evidence), *self._enter(node.default)]

    def _ask_to_confirm(self, node: SpeechRouteNode, target: str, decision: SpeechRoute) -> list[Action]:
        prompt = node.confirm_prompts.get(target)
        if prompt is None:  # an accept-only target: the grammar's doubt cannot be resolved here
            return self._route_default(node, _evidence("unconfirmable", decision))
        actions = self._leave()
        self._phase = Phase.ROUTE_CONFIRM_PROMPT
        self._route_decision = decision
        return [*actions, self._play(prompt)]

    def _take_decision(self) -> tuple[SpeechRoute, str]:
        """The decision being confirmed and its (routed, confirmable) target; cleared."""
        decision, self._route_decision = self._route_decision, None
        assert decision is not None and decision.target is not None, "confirming without a decision"
        return decision, decision.target

    def _store_speech(self, event: SpeechResult) -> list[Action]:
        text = event.text.strip()
        if not text:
            return []
        self._message_left = True
        return [
            SetTicketField(FIELD_SPEECH_TEXT, text),
            SetTicketField(FIELD_SPEECH_CONFIDENCE, f"{event.confidence:.2f}"),
        ]


def _evidence(what: str, decision: SpeechRoute, *, routed: bool = False) -> str:
    """``route_evidence``: what happened and what the grammar heard; the target only when not routed to
    it (a routed call has it in ``route``)."""
    target = "" if routed or decision.target is None else f" target={decision.target}"
    return f"{what}{target} keyword={decision.keyword} confidence={decision.confidence:.2f}"


Handler = Callable[[CallMachine, Any], list[Action]]

_C = CallMachine
_HUNG_UP: dict[type[Any], Handler] = {HungUp: _C._on_caller_hung_up}

TRANSITIONS: dict[Phase, dict[type[Any], Handler]] = {
    Phase.IDLE: {Answered: _C._on_answered, **_HUNG_UP},
    Phase.PLAY: {PromptFinished: _C._on_play_done, Digit: _C._on_human_key_only, **_HUNG_UP},
    Phase.MENU_PROMPT: {PromptFinished: _C._on_keyed_prompt_done, Digit: _C._on_menu_digit, **_HUNG_UP},
    Phase.MENU_WAIT: {TimerFired: _C._on_input_timeout, Digit: _C._on_menu_digit, **_HUNG_UP},
    Phase.SPEECH_PROMPT: {
        PromptFinished: _C._on_speech_prompt_done,
        Digit: _C._on_human_key_only,
        **_HUNG_UP,
    },
    Phase.SPEECH_LISTEN: {
        SpeechResult: _C._on_speech_result,
        Digit: _C._on_speech_digit,
        TimerFired: _C._on_speech_max,
        RecordingFinished: _C._on_speech_recording_ended,
        **_HUNG_UP,
    },
    Phase.SPEECH_FLUSH: {
        SpeechResult: _C._on_flush_result,
        TimerFired: _C._on_flush_timeout,
        Digit: _C._on_human_key_only,
        **_HUNG_UP,
    },
    Phase.ROUTE_PROMPT: {
        PromptFinished: _C._on_route_prompt_done,
        Digit: _C._on_human_key_only,
        **_HUNG_UP,
    },
    Phase.ROUTE_LISTEN: {
        SpeechRoute: _C._on_speech_route,
        Digit: _C._on_human_key_only,
        TimerFired: _C._on_route_listen_timeout,
        RecordingFinished: _C._on_route_recording_ended,
        **_HUNG_UP,
    },
    Phase.ROUTE_CONFIRM_PROMPT: {
        PromptFinished: _C._on_route_confirm_prompt_done,
        Digit: _C._on_route_confirm_digit,
        **_HUNG_UP,
    },
    Phase.ROUTE_CONFIRM_WAIT: {
        TimerFired: _C._on_route_confirm_timeout,
        Digit: _C._on_route_confirm_digit,
        **_HUNG_UP,
    },
    Phase.MESSAGE_PROMPT: {
        PromptFinished: _C._on_message_prompt_done,
        Digit: _C._on_human_key_only,
        **_HUNG_UP,
    },
    Phase.MESSAGE_RECORD: {
        Digit: _C._on_message_digit,
        TimerFired: _C._on_message_max,
        RecordingFinished: _C._on_message_recording_ended,
        **_HUNG_UP,
    },
    Phase.QUEUED: {
        PromptFinished: _C._on_hold_done,
        TimerFired: _C._on_queue_timer,
        Position: _C._on_position,
        IntakeRefused: _C._on_intake_refused,
        AgentOffered: _C._on_agent_offered,
        AgentRinging: _C._on_agent_ringing,
        AgentAnswered: _C._on_agent_answered,
        AgentFailed: _C._on_agent_failed,
        **_HUNG_UP,
    },
    Phase.BRIDGED: {AgentHungUp: _C._on_agent_hung_up, **_HUNG_UP},
    Phase.SURVEY_PROMPT: {PromptFinished: _C._on_keyed_prompt_done, Digit: _C._on_survey_digit, **_HUNG_UP},
    Phase.SURVEY_WAIT: {TimerFired: _C._on_input_timeout, Digit: _C._on_survey_digit, **_HUNG_UP},
    Phase.GOODBYE: {
        PromptFinished: _C._on_goodbye_done,
        Digit: _C._on_human_key_only,
        HungUp: _C._on_hung_up_in_goodbye,
    },
    Phase.DONE: {},  # finished: every event returns [] (checked before the lookup)
}
"""``TRANSITIONS[phase][type(event)]`` -> handler. Missing pairs are ignored (see module docstring)."""

ENTER: dict[type[Any], Handler] = {
    PlayNode: _C._enter_play,
    MenuNode: _C._enter_menu,
    CollectSpeechNode: _C._enter_speech,
    QueueNode: _C._enter_queue,
    BusinessHoursNode: _C._enter_hours,
    HangupNode: _C._enter_hangup,
    RecordMessageNode: _C._enter_message,
    SatisfactionNode: _C._enter_survey,
    SpeechRouteNode: _C._enter_route,
}
"""``ENTER[type(node)]`` -> what entering a node of that type does."""


def _summary(handler: Handler) -> str:
    return (handler.__doc__ or "").strip().splitlines()[0]


def transition_table_markdown() -> str:
    """The transition table as markdown (``docs/ivr.md`` embeds it; a test keeps them equal)."""
    lines = ["| Phase | Event | Handler | Effect |", "|---|---|---|---|"]
    for phase, row in TRANSITIONS.items():
        for event_type, handler in row.items():
            lines.append(f"| `{phase}` | `{event_type.__name__}` | `{handler.__name__}` | {_summary(handler)} |")
    return "\n".join(lines)


def enter_table_markdown() -> str:
    """What entering each node type does, as markdown (embedded in ``docs/ivr.md``)."""
    lines = ["| Node type | On entry |", "|---|---|"]
    for node_type, handler in ENTER.items():
        tag = node_type.model_fields["type"].annotation.__args__[0]
        lines.append(f"| `{tag}` | {_summary(handler)} |")
    return "\n".join(lines)
