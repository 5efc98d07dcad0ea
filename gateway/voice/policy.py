"""The media worker's call policy, pure: what a call's ticket says, and how a finished call is settled.

The IVR machine (`gateway.ivr.machine`) decides what happens during a call; this module decides what
the call leaves behind: the draft ticket queued for an agent (routed by `gateway.intake.route`, the
one priority rule of every channel), what the caller said pre-filled into it, the callback ticket of
a caller no agent spoke to, and which settlement a finished call needs. The call session
(`gateway.voice.session`) only gathers the facts and carries the answers out. No I/O, no clock: times
come in as arguments (a new ticket id is a ULID made from the `now` given), and a test checks the
imports (`tests/voice/test_policy.py`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime

from pydantic import ValidationError

from gateway.asr.text import extract
from gateway.config import GatewayConfig
from gateway.intake import IntakeCitizen, IntakeRequest, route
from gateway.ivr.actions import (
    DEQUEUE_ABANDONED,
    FIELD_ROUTE,
    FIELD_ROUTE_EVIDENCE,
    FIELD_SATISFACTION,
    FIELD_SPEECH_TEXT,
)
from gateway.ivr.events import Refusal
from gateway.ivr.machine import OUTCOME_ABANDONED, OUTCOME_MESSAGE
from gateway.ticket import Attachment, Citizen, Ticket, TranscriptSegment, VoiceCall, new_ticket_id

TRANSCRIPT_KEPT = 200  # final segments a voice ticket keeps (the last ones)
MAX_NOTES_CHARS = 4000

# Why a waiting ticket was abandoned (its history) and why a callback ticket was queued (its notes).
ABANDONED_BY_CALLER = "caller_hung_up"
WORKER_SHUTDOWN = "worker_shutdown"
VOICE_MESSAGE = "voice_message"
CALLBACK_REASONS: Mapping[Refusal, str] = {"queue_full": "queue_full", "unavailable": "store_unavailable"}
"""The callback reason of a caller the queue refused (`IntakeRefused`) who left no message."""


@dataclass(frozen=True, slots=True)
class CallFacts:
    """What the worker knows about a call when it shapes the call's ticket."""

    call_id: str
    worker_id: str
    caller: str  # the From user part, whatever it is (a number, a name, '')
    called: str
    started: datetime
    ivr_path: str
    fields: Mapping[str, str]  # the machine's SetTicketField values
    transcript: tuple[TranscriptSegment, ...]  # final segments, in order
    recording: Attachment | None  # the caller's recording, when it runs


def caller_phone(caller: str) -> str | None:
    """The caller's number when the SIP user part is one (the ticket's own rule), else None."""
    try:
        return Citizen(phone=caller).phone
    except ValidationError:
        return None


def draft_ticket(facts: CallFacts, queue: str, priority: int, config: GatewayConfig, ticket_id: str) -> Ticket:
    """The call's ticket for `queue`: routed by the rule every channel's intake uses (the flow node's
    priority is the request's), pre-filled from what the caller said."""
    # Only the routing fields: a call has no text to validate yet (it may never have one).
    phone = caller_phone(facts.caller)
    citizen = IntakeCitizen.model_construct(phone=phone)
    request = IntakeRequest.model_construct(
        channel="voice", queue=queue, priority=priority, flags=[], text="", citizen=citizen
    )
    queue, priority, flags = route(request, config)
    ticket = Ticket(
        id=ticket_id,
        channel="voice",
        message_id=facts.call_id,
        citizen=Citizen(phone=phone),
        received_at=facts.started,
        text=facts.fields.get(FIELD_SPEECH_TEXT, ""),
        transcript=facts.transcript[-TRANSCRIPT_KEPT:],
        route=facts.fields.get(FIELD_ROUTE, ""),
        route_evidence=facts.fields.get(FIELD_ROUTE_EVIDENCE, "")[:256],
        attachments=(facts.recording,) if facts.recording is not None else (),
        ivr_path=facts.ivr_path[:64],
        queue=queue,
        priority=priority,
        flags=flags,
        status="queued",
        voice=VoiceCall(worker=facts.worker_id, call_id=facts.call_id, caller=facts.caller, called=facts.called),
    )
    return prefilled(ticket, facts.transcript)


def prefilled(ticket: Ticket, segments: tuple[TranscriptSegment, ...] | list[TranscriptSegment]) -> Ticket:
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
        update["notes"] = "\n".join([ticket.notes, *notes] if ticket.notes else notes)[:MAX_NOTES_CHARS]
    return ticket.model_copy(update=update) if update else ticket


def with_segment(ticket: Ticket, segment: TranscriptSegment) -> Ticket:
    """A stored ticket with one more final segment of the call (and what it pre-fills)."""
    transcript = (*ticket.transcript, segment)[-TRANSCRIPT_KEPT:]
    return prefilled(ticket.model_copy(update={"transcript": transcript}), [segment])


def with_field(name: str, value: str) -> Callable[[Ticket], Ticket]:
    """How a `SetTicketField` set after intake changes the stored ticket (a spoken request only
    fills an empty text; fields the ticket has no place for change nothing)."""

    def change(ticket: Ticket) -> Ticket:
        if name == FIELD_SATISFACTION:
            return ticket.model_copy(update={"satisfaction": value})
        if name == FIELD_SPEECH_TEXT and not ticket.text:
            return ticket.model_copy(update={"text": value})
        return ticket

    return change


def with_recordings(caller: Attachment | None, others: tuple[Attachment, ...]) -> Callable[[Ticket], Ticket]:
    """The stored ticket with the call's finished recordings: the caller's first (its duration now
    known), replacing the one attached at intake, then the others (message, speech, agent)."""

    def change(ticket: Ticket) -> Ticket:
        kept = [a for a in ticket.attachments if not (caller and a.path == caller.path)]
        if caller is not None:
            kept.insert(0, caller)
        return ticket.model_copy(update={"attachments": (*kept, *others)})

    return change


def callback_ticket(
    original: Ticket, now: datetime, priority: int, reason: str, *, the_calls_own: bool = False
) -> Ticket:
    """A ticket asking an agent to call the citizen back.

    Its message id makes it one per call whoever files it (the worker, the core settling a dead
    worker, the worker's spool after an outage): `<call id>-callback` beside the call's own ticket,
    or the call id itself (`the_calls_own`) when the call has no ticket of its own (the queue
    refused it, or it never reached one), so a ticket the store took without the worker hearing of it
    is found instead of doubled."""
    text = original.text or "来电未接通，请回拨市民。"
    return Ticket(
        id=original.id if the_calls_own else new_ticket_id(now),
        channel="voice",
        message_id=original.message_id if the_calls_own else f"{original.message_id}-callback",
        citizen=original.citizen,
        received_at=now,
        text=text,
        attachments=original.attachments,
        transcript=original.transcript,
        ivr_path=original.ivr_path,
        queue=original.queue,
        priority=priority,
        flags=(*[f for f in original.flags if f != "callback"], "callback"),
        status="queued",
        voice=original.voice,
        notes=f"回拨原因: {reason}",
    )


@dataclass(frozen=True, slots=True)
class Settlement:
    """What a finished call still needs: its waiting ticket abandoned (with this reason), a callback
    ticket (with this reason). None: not needed."""

    abandon: str | None = None
    callback: str | None = None


def settlement(outcome: str | None, *, has_ticket: bool, refused: Refusal | None, shutting_down: bool) -> Settlement:
    """The settlement of a call the machine finished with `outcome` (an `OUTCOME_*` constant).

    - A voice message (or a spoken request) with no agent: a callback.
    - The caller hung up while their ticket waited: it is abandoned. When the worker itself was
      stopping, the caller did not choose to leave: the ticket says so, and a callback is queued.
    - A caller the queue refused (`IntakeRefused`) who left no message still gets a callback: no
      caller who asked for a person is left without a ticket.
    """
    abandon = callback = None
    if outcome == OUTCOME_ABANDONED and has_ticket:
        abandon = abandon_reason(DEQUEUE_ABANDONED, shutting_down)
        callback = WORKER_SHUTDOWN if shutting_down else None
    if outcome == OUTCOME_MESSAGE:
        callback = VOICE_MESSAGE
    if callback is None and refused is not None:
        callback = CALLBACK_REASONS[refused]
    return Settlement(abandon, callback)


def abandon_reason(dequeue_reason: str, shutting_down: bool) -> str:
    """The abandoned ticket's reason for a `Dequeue` (its own reason, `overflow`, kept)."""
    if shutting_down:
        return WORKER_SHUTDOWN
    return ABANDONED_BY_CALLER if dequeue_reason == DEQUEUE_ABANDONED else dequeue_reason


def still_waiting(status: str, bridged: bool) -> bool:
    """Whether a stored ticket still waits for an agent: queued, offered, or claimed by an agent
    whose phone never got to talk to the caller."""
    return status in ("queued", "offered") or (status == "claimed" and not bridged)
