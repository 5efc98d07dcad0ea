"""Deadlines (红黄绿三色预警) as pure functions of the clocks and a time passed in.

A limit is the catalogue's deadline class: ``"2h"``/``"24h"`` run on the wall clock (a gas leak does
not wait for Monday), ``"3wd"``/``"5wd"``/``"15wd"`` count working days on the business calendar
(:mod:`gateway.ivr.calendar`: weekly hours, holidays, 调休 make-up working days). Working days are
counted as the law counts periods: the day a ticket arrives does not count, so ``"3wd"`` is due when
the third working day after it closes (received Friday: due Wednesday's close).

The enterprise line's 2110 rule gives a ticket three clocks: contact within 2 hours, a reply within
1 working day, resolved within 10 working days (or the category's own limit when it is shorter).

A clock is green, then yellow once ``yellow_share`` of its time is used, then red when overdue. An
overdue clock not met escalates (督办): a reminder when the working day after its due day opens and
a report 5 working days after that. Nothing here reads a clock or stores state: the caller passes
``now`` and keeps which events it already sent (an event's ``key`` names it once); the escalation
loop (gateway/triage/escalate.py) asks ``escalation_step`` what to send and when to look again.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Literal

from gateway.ivr.calendar import Calendar, hours_on, local_time
from gateway.ticket import ClockName, DeadlineClock, EscalationKind, Ticket

Colour = Literal["green", "yellow", "red"]
ESCALATION_KINDS: tuple[EscalationKind, ...] = ("reminder", "report")

COLOUR_ORDER: dict[Colour, int] = {"green": 0, "yellow": 1, "red": 2}
REPORT_AFTER_WORKING_DAYS = 5
# A calendar with no working day in this many days is a configuration error, not a loop for ever.
MAX_DAYS_SEARCHED = 366

_LIMIT = re.compile(r"^([1-9][0-9]{0,2})(h|wd)$")


@dataclass(frozen=True, slots=True)
class Limit:
    """A deadline class: ``amount`` wall-clock hours or working days."""

    amount: int
    unit: Literal["h", "wd"]

    @classmethod
    def parse(cls, text: str) -> Limit:
        """``"24h"`` or ``"5wd"``; anything else is a ValueError naming the text."""
        match = _LIMIT.match(text)
        if match is None:
            raise ValueError(f"deadline class {text!r}: expected hours ('2h') or working days ('5wd')")
        unit: Literal["h", "wd"] = "h" if match[2] == "h" else "wd"
        return cls(int(match[1]), unit)

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"


ENTERPRISE_CONTACT = Limit(2, "h")
ENTERPRISE_REPLY = Limit(1, "wd")
ENTERPRISE_RESOLVE = Limit(10, "wd")


@dataclass(frozen=True, slots=True)
class Clock:
    """One deadline on a ticket; ``met_at`` is when what it asks for was done (None: not yet)."""

    name: ClockName
    limit: Limit
    received_at: datetime
    due: datetime
    met_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Escalation:
    """A 督办 step owed for an overdue clock: sent once, at or after ``at``."""

    clock: ClockName
    kind: EscalationKind
    at: datetime

    @property
    def key(self) -> str:
        return f"{self.clock}:{self.kind}"


def is_working_day(calendar: Calendar, day: date) -> bool:
    return bool(hours_on(calendar, day))


def next_working_day(calendar: Calendar, day: date) -> date:
    """The first working day strictly after ``day``."""
    for offset in range(1, MAX_DAYS_SEARCHED + 1):
        candidate = day + timedelta(days=offset)
        if is_working_day(calendar, candidate):
            return candidate
    raise ValueError(f"the calendar has no working day in the {MAX_DAYS_SEARCHED} days after {day}")


def add_working_days(calendar: Calendar, day: date, count: int) -> date:
    """The ``count``-th working day after ``day`` (``day`` itself never counts)."""
    for _ in range(count):
        day = next_working_day(calendar, day)
    return day


def _at(calendar: Calendar, day: date, minute: int, like: datetime) -> datetime:
    """Local ``day`` + ``minute`` as a datetime aware (or naive) as ``like`` is."""
    local = datetime.combine(day, time()) + timedelta(minutes=minute)
    if like.tzinfo is None:
        return local
    return local.replace(tzinfo=timezone(timedelta(hours=calendar.utc_offset_hours)))


def closing(calendar: Calendar, day: date, like: datetime) -> datetime:
    """When a working day's last open range ends."""
    return _at(calendar, day, max(r.end for r in hours_on(calendar, day)), like)


def opening(calendar: Calendar, day: date, like: datetime) -> datetime:
    """When a working day's first open range starts."""
    return _at(calendar, day, min(r.start for r in hours_on(calendar, day)), like)


def deadline(received_at: datetime, deadline_class: Limit | str, calendar: Calendar) -> datetime:
    """When a limit counted from ``received_at`` runs out."""
    limit = deadline_class if isinstance(deadline_class, Limit) else Limit.parse(deadline_class)
    if limit.unit == "h":
        return received_at + timedelta(hours=limit.amount)
    received_day = local_time(calendar, received_at).date()
    return closing(calendar, add_working_days(calendar, received_day, limit.amount), received_at)


def colour(now: datetime, received_at: datetime, due: datetime, yellow_share: float) -> Colour:
    """Red from ``due`` on, yellow once ``yellow_share`` of the time from received to due is used."""
    if now >= due:
        return "red"
    if now - received_at >= (due - received_at) * yellow_share:
        return "yellow"
    return "green"


def clock_colour(clock: Clock, now: datetime, yellow_share: float) -> Colour:
    """A met clock keeps the colour it had when it was met (met late stays red)."""
    at = now if clock.met_at is None or clock.met_at > now else clock.met_at
    return colour(at, clock.received_at, clock.due, yellow_share)


def ticket_clocks(
    received_at: datetime, deadline_class: Limit | str, enterprise: bool, calendar: Calendar
) -> tuple[Clock, ...]:
    """A ticket's clocks: one (resolve) for its category's class, three on the enterprise line (2110)."""
    limit = deadline_class if isinstance(deadline_class, Limit) else Limit.parse(deadline_class)
    resolve = Clock("resolve", limit, received_at, deadline(received_at, limit, calendar))
    if not enterprise:
        return (resolve,)
    enterprise_resolve = Clock(
        "resolve", ENTERPRISE_RESOLVE, received_at, deadline(received_at, ENTERPRISE_RESOLVE, calendar)
    )
    return (
        Clock("contact", ENTERPRISE_CONTACT, received_at, deadline(received_at, ENTERPRISE_CONTACT, calendar)),
        Clock("reply", ENTERPRISE_REPLY, received_at, deadline(received_at, ENTERPRISE_REPLY, calendar)),
        min(resolve, enterprise_resolve, key=lambda clock: clock.due),
    )


def owed(clocks: tuple[Clock, ...], calendar: Calendar) -> tuple[Escalation, ...]:
    """Every 督办 event the clocks owe as they stand, whenever it falls due: for each clock not met
    by its due time, a reminder when the next working day opens, and a report when the 5th working
    day after that opens. A clock not met yet owes both (meeting it later can only take some away)."""
    events: list[Escalation] = []
    for clock in clocks:
        if clock.met_at is not None and clock.met_at <= clock.due:
            continue
        due_day = local_time(calendar, clock.due).date()
        reminder_day = next_working_day(calendar, due_day)
        report_day = add_working_days(calendar, reminder_day, REPORT_AFTER_WORKING_DAYS)
        steps = (
            Escalation(clock.name, "reminder", opening(calendar, reminder_day, clock.due)),
            Escalation(clock.name, "report", opening(calendar, report_day, clock.due)),
        )
        # A clock met late stops escalating from when it was met.
        events += [event for event in steps if clock.met_at is None or event.at < clock.met_at]
    return tuple(events)


def escalations(clocks: tuple[Clock, ...], now: datetime, calendar: Calendar) -> tuple[Escalation, ...]:
    """The 督办 events due by ``now`` (`owed`, those whose time has come)."""
    return tuple(event for event in owed(clocks, calendar) if event.at <= now)


def next_escalation(clocks: tuple[Clock, ...], calendar: Calendar, after: datetime | None = None) -> datetime | None:
    """When the earliest event the clocks owe falls due (of those after ``after``, when given):
    when a scheduler must look at the ticket (again). None: nothing is owed, or nothing more."""
    return min((event.at for event in owed(clocks, calendar) if after is None or event.at > after), default=None)


@dataclass(frozen=True, slots=True)
class EscalationStep:
    """What the escalation loop does with one ticket at a moment: send ``send`` (the events due and
    not sent before), then look at the ticket again at ``next_at`` (None: never; it is unscheduled)."""

    send: tuple[Escalation, ...]
    next_at: datetime | None


def escalation_step(
    clocks: tuple[Clock, ...], sent: frozenset[str], now: datetime, calendar: Calendar
) -> EscalationStep:
    """The loop's decision for a ticket whose clocks stand as ``clocks`` at ``now``, ``sent`` the
    keys of the events it already has: every later event is at or after ``next_at``, so the
    ticket never waits past an event it owes (one met meanwhile is simply not sent then)."""
    send = tuple(event for event in escalations(clocks, now, calendar) if event.key not in sent)
    return EscalationStep(send, next_escalation(clocks, calendar, after=now))


# What meets each clock, by the ticket's history: an agent taking the ticket contacts the citizen
# (the call is answered, the message read), a reply or the submit replies, the submit resolves.
MET_BY: dict[ClockName, frozenset[str]] = {
    "contact": frozenset({"claimed", "replied", "submitted"}),
    "reply": frozenset({"replied", "submitted"}),
    "resolve": frozenset({"submitted"}),
}


# The history line the escalation loop writes with each event it sends (detail: `clock`, `kind`):
# what the seat shows, and what the HTTP API lists under the clock.
ESCALATED_BY, ESCALATED = "triage", "escalated"


@dataclass(frozen=True, slots=True)
class SentEscalation:
    """A 督办 event a ticket was sent, as its history says: which step, and when it was sent."""

    kind: EscalationKind
    at: datetime

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "at": self.at.isoformat()}


@dataclass(frozen=True, slots=True)
class ClockState:
    """A ticket's clock as it stands at a moment: what the HTTP API and the wallboard show."""

    name: ClockName
    limit: str
    due: datetime
    colour: Colour
    met_at: datetime | None
    escalated: tuple[SentEscalation, ...] = ()

    def as_dict(self) -> dict[str, object]:
        shown: dict[str, object] = {"name": self.name, "limit": self.limit, "due": self.due.isoformat()}
        shown["colour"] = self.colour
        if self.met_at is not None:
            shown["met_at"] = self.met_at.isoformat()
        if self.escalated:
            shown["escalations"] = [sent.as_dict() for sent in self.escalated]
        return shown


def resolve_clock(ticket: Ticket) -> DeadlineClock | None:
    """The clock that closes a ticket (every ticket with clocks has one), or None without clocks."""
    return next((clock for clock in ticket.clocks if clock.name == "resolve"), None)


def clocks_of(ticket: Ticket) -> tuple[Clock, ...]:
    """The ticket's clocks, each met when its history first shows what meets it (`MET_BY`)."""
    return tuple(
        Clock(
            stored.name,
            Limit.parse(stored.limit),
            ticket.received_at,
            stored.due,
            next((entry.at for entry in ticket.history if entry.action in MET_BY[stored.name]), None),
        )
        for stored in ticket.clocks
    )


def sent_escalations(ticket: Ticket) -> dict[str, SentEscalation]:
    """The 督办 events the ticket's history says it was sent, by key (`resolve:reminder`)."""
    sent: dict[str, SentEscalation] = {}
    for entry in ticket.history:
        if (entry.actor, entry.action) != (ESCALATED_BY, ESCALATED):
            continue
        for kind in ESCALATION_KINDS:
            if entry.detail.get("kind") == kind:
                sent.setdefault(f"{entry.detail.get('clock', '')}:{kind}", SentEscalation(kind, entry.at))
    return sent


def clock_states(ticket: Ticket, now: datetime, yellow_share: float) -> tuple[ClockState, ...]:
    """Each of the ticket's clocks at ``now``: its colour, when it was met, the 督办 events it was sent."""
    sent = sent_escalations(ticket)
    return tuple(
        ClockState(
            clock.name,
            str(clock.limit),
            clock.due,
            clock_colour(clock, now, yellow_share),
            clock.met_at,
            tuple(sent[key] for kind in ESCALATION_KINDS if (key := f"{clock.name}:{kind}") in sent),
        )
        for clock in clocks_of(ticket)
    )
