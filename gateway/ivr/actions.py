"""Actions: what the IVR core asks the telephony adapter to do.

``CallMachine.handle`` returns a list of these; the adapter executes them in list order before it
feeds the next event. Every action is a frozen, slotted dataclass with no behaviour.

Media contract (the machine relies on it):

* At most one prompt plays at a time. ``Play`` replaces whatever is playing; ``StopPrompt`` stops it.
  ``PromptFinished`` is sent only for a prompt that reached its natural end.
* At most one recording runs at a time, between ``StartRecording`` and ``StopRecording`` /
  ``RecordingFinished``. The adapter owns the audio file: a ``message`` recording becomes the call's
  voice message (callback ticket), a ``speech`` recording is kept with the draft ticket.
* A ``navigation`` recording is streamed to the navigation grammar; the adapter decides and feeds at
  most one ``SpeechRoute`` for it (none once the machine sent ``StopRecording``).
* Timer names are unique per call; ``CancelTimer`` of a timer that already fired is harmless.
* At most one agent leg at a time, between ``DialAgent`` and the ``AgentFailed``/``AgentHungUp`` that
  reports its end (``DropAgent`` ends it early; its end is still reported).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RecordingKind = Literal["speech", "message", "navigation"]

# Ticket fields the machine sets with SetTicketField; the adapter maps them onto the draft ticket.
FIELD_SPEECH_TEXT = "speech_text"
FIELD_SPEECH_CONFIDENCE = "speech_confidence"
FIELD_SATISFACTION = "satisfaction"
FIELD_ROUTE = "route"  # the navigation target the call was routed to (speech_route node)
FIELD_ROUTE_EVIDENCE = "route_evidence"  # why: "accept keyword=住房 confidence=0.91", "reject ...", "timeout"

# HangUp reasons (the machine ends the call itself).
REASON_FLOW_END = "flow_end"
REASON_AGENT_ENDED = "agent_ended"
REASON_SURVEY_DONE = "survey_done"
REASON_INTERNAL_ERROR = "internal_error"

# Dequeue reasons.
DEQUEUE_OVERFLOW = "overflow"
DEQUEUE_ABANDONED = "abandoned"

# Requeue reasons (docs/seat-protocol.md: the seat's `revoked` frame carries them).
REQUEUE_NO_ANSWER = "agent_no_answer"  # the ring timer ran out (not the phone's answer to our CANCEL)
REQUEUE_FAILED = "agent_failed_{status}"  # the phone's own final status: 486 busy, 480, 408...


@dataclass(frozen=True, slots=True)
class Play:
    """Play prompt ``prompt`` (an id of ``Flow.prompts``), replacing any prompt already playing.

    ``params`` fill the prompt text's ``{placeholders}`` (only ``n`` for position announcements);
    use ``PromptSpec.render``. ``barge_in`` is True when the machine acts on keys pressed during the
    prompt (it then stops the prompt itself with ``StopPrompt``); it is False only for queue prompts.
    """

    prompt: str
    barge_in: bool
    params: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class StopPrompt:
    """Stop the playing prompt now (barge-in or leaving the node); do not report PromptFinished."""


@dataclass(frozen=True, slots=True)
class StartRecording:
    """Start recording the caller (``speech``: also stream to ASR with ``silence_seconds`` endpointing).

    ``navigation``: stream to the navigation grammar (end-pointing with ``silence_seconds`` when set) and
    answer with one ``SpeechRoute``.

    ``max_seconds`` is a safety cap for the recorder; the machine also runs its own timer for it.
    The prompt's audio is expected to end with the record tone (请在提示音后...).
    """

    kind: RecordingKind
    max_seconds: float
    silence_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class StopRecording:
    """Stop the running recording and keep what was recorded."""


@dataclass(frozen=True, slots=True)
class StartTimer:
    """Start a one-shot timer; when it expires feed ``TimerFired(name)``."""

    name: str
    seconds: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    """Cancel timer ``name``; a ``TimerFired`` that still arrives for it is ignored by the machine."""

    name: str


@dataclass(frozen=True, slots=True)
class SetTicketField:
    """Set ``name`` (one of the ``FIELD_*`` constants) on the call's draft ticket."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class EnqueueCall:
    """Create/queue the call's draft ticket in agent queue ``queue``; larger ``priority`` is served first."""

    queue: str
    priority: int


@dataclass(frozen=True, slots=True)
class QueryPosition:
    """Ask the queue how many callers are ahead; answer with ``Position(n)``."""

    queue: str


@dataclass(frozen=True, slots=True)
class Dequeue:
    """Take the call out of ``queue`` (``overflow`` or ``abandoned``); no agent may get it any more."""

    queue: str
    reason: str


@dataclass(frozen=True, slots=True)
class Bridge:
    """Connect the caller's media to the agent who answered (after ``AgentAnswered``)."""


@dataclass(frozen=True, slots=True)
class DialAgent:
    """Ring ``agent``'s phone at ``uri`` for the queued call; report the leg with ``AgentRinging``,
    ``AgentAnswered`` and ``AgentFailed``."""

    agent: str
    uri: str


@dataclass(frozen=True, slots=True)
class DropAgent:
    """End the agent leg (CANCEL while it rings, BYE once answered)."""


@dataclass(frozen=True, slots=True)
class ScreenPop:
    """Tell ``agent``'s seat that its phone rings with the call's ticket."""

    agent: str


@dataclass(frozen=True, slots=True)
class Requeue:
    """The agent's phone did not take the call: the ticket goes back to its queue at its old place
    and ``agent``'s seat is told why (``reason``)."""

    agent: str
    reason: str


@dataclass(frozen=True, slots=True)
class HangUp:
    """Hang up the caller's leg (send BYE). The machine is finished afterwards."""

    reason: str


Action = (
    Play
    | StopPrompt
    | StartRecording
    | StopRecording
    | StartTimer
    | CancelTimer
    | SetTicketField
    | EnqueueCall
    | QueryPosition
    | Dequeue
    | Bridge
    | DialAgent
    | DropAgent
    | ScreenPop
    | Requeue
    | HangUp
)
