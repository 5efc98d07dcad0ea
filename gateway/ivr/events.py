"""Events: what the telephony adapter tells the IVR core.

Every event is a frozen, slotted dataclass. The adapter turns pjsua2 callbacks (DTMF, player EOF,
recorder stop, ASR results, navigation decisions), its own timers and the ticket queue's notifications
into these and feeds them to :meth:`gateway.ivr.machine.CallMachine.handle` one at a time, in arrival
order.

The core owns no clock: the only wall-clock reading it ever sees is ``Answered.now``; durations come
back as ``TimerFired`` after the core asked for them with ``StartTimer`` (the agent's ring timeout
included).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal, get_args

DTMF_DIGITS = frozenset("0123456789*#")
"""The keys a caller can press. A-D exist in RFC 4733 but not on phones, so they are rejected."""

RouteAction = Literal["accept", "confirm", "reject"]
"""The adapter's navigation decision: route now, ask the caller to confirm first, or out of domain."""
ROUTE_ACTIONS = frozenset(get_args(RouteAction))

Refusal = Literal["queue_full", "unavailable"]
"""Why the queue did not take (or can no longer keep) the call: the queue is at its bound, or the
ticket store is out of reach."""
REFUSALS = frozenset(get_args(Refusal))


@dataclass(frozen=True, slots=True)
class Answered:
    """The gateway answered the call; ``now`` is the answer time used for business-hours routing."""

    now: datetime
    caller: str
    called: str


@dataclass(frozen=True, slots=True)
class Digit:
    """One DTMF key press (RFC 4733 or SIP INFO, already decoded by the adapter)."""

    digit: str

    def __post_init__(self) -> None:
        # An invalid key is an adapter bug, so it fails loudly here instead of inside the machine.
        if self.digit not in DTMF_DIGITS:
            raise ValueError(f"not a DTMF key: {self.digit!r}")


@dataclass(frozen=True, slots=True)
class SpeechResult:
    """An ASR result for the running ``speech`` recording; only ``final`` results are acted on."""

    text: str
    confidence: float
    final: bool


@dataclass(frozen=True, slots=True)
class SpeechRoute:
    """The navigation grammar's decision for the running ``navigation`` recording (智能语音导航).

    The adapter, not the machine, turns the recognizer's keyword and confidence into ``action``:
    ``accept`` routes to ``target``, ``confirm`` asks the caller first, ``reject`` means unsure or out of
    domain (``target`` is then usually None). One decision per recording, at most; none after
    ``StopRecording``.
    """

    action: RouteAction
    target: str | None
    keyword: str
    confidence: float

    def __post_init__(self) -> None:
        # Like Digit: a decision the machine cannot read is an adapter bug, so it fails loudly here.
        if self.action not in ROUTE_ACTIONS:
            raise ValueError(f"not a navigation decision: {self.action!r}")


@dataclass(frozen=True, slots=True)
class PromptFinished:
    """The prompt started by the last ``Play`` reached its end.

    The adapter must not report prompts it stopped itself (``StopPrompt`` or a newer ``Play``).
    """

    prompt_id: str


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A timer requested with ``StartTimer(name, ...)`` expired. Unknown or stale names are ignored."""

    name: str


@dataclass(frozen=True, slots=True)
class RecordingFinished:
    """The adapter's recorder stopped on its own (media error, size cap); ``path`` is None if empty."""

    path: str | None
    seconds: float


@dataclass(frozen=True, slots=True)
class HungUp:
    """The caller hung up (BYE/CANCEL). Always ends the machine."""


@dataclass(frozen=True, slots=True)
class Position:
    """The caller's place in the agent queue: ``n`` callers are ahead (answer to ``QueryPosition``)."""

    n: int


@dataclass(frozen=True, slots=True)
class IntakeRefused:
    """The queue did not take the call's ticket (the answer to ``EnqueueCall``), or the worker lost the
    ticket store while the call waited: go to the queue node's overflow (``unavailable``: to its
    ``unavailable`` node when it names one: an apology, then a voice message)."""

    reason: Refusal

    def __post_init__(self) -> None:
        if self.reason not in REFUSALS:
            raise ValueError(f"not a refusal: {self.reason!r}")


@dataclass(frozen=True, slots=True)
class AgentOffered:
    """A seat accepted the queued call: ring ``agent``'s phone at ``uri`` (the machine answers with
    ``DialAgent`` and the ring timer)."""

    agent: str
    uri: str


@dataclass(frozen=True, slots=True)
class AgentRinging:
    """The agent's phone rings (a provisional response on the agent leg)."""


@dataclass(frozen=True, slots=True)
class AgentAnswered:
    """The agent's phone answered; the machine answers with ``Bridge``."""


@dataclass(frozen=True, slots=True)
class AgentFailed:
    """The agent leg ended before it was answered: the phone refused (``status``: its final SIP status,
    486, 480...) or the machine dropped it (``DropAgent``, its ring timer ran out)."""

    status: int = 0


@dataclass(frozen=True, slots=True)
class AgentHungUp:
    """The agent ended the conversation while the caller is still on the line (survey time)."""


Event = (
    Answered
    | Digit
    | SpeechResult
    | SpeechRoute
    | PromptFinished
    | TimerFired
    | RecordingFinished
    | HungUp
    | Position
    | IntakeRefused
    | AgentOffered
    | AgentRinging
    | AgentAnswered
    | AgentFailed
    | AgentHungUp
)

EVENT_TYPES: tuple[type[Event], ...] = (
    Answered,
    Digit,
    SpeechResult,
    SpeechRoute,
    PromptFinished,
    TimerFired,
    RecordingFinished,
    HungUp,
    Position,
    IntakeRefused,
    AgentOffered,
    AgentRinging,
    AgentAnswered,
    AgentFailed,
    AgentHungUp,
)
