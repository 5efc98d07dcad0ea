"""What triage decides about one ticket: pure, over the ticket and what triage was built from.

`assess(ticket, triager, now)` returns the ticket amended once with
- its dispatch suggestions (分派目录, `dispatch.suggest`) from what the citizen wrote and said;
- the sensitive words (敏感词库, `sensitive.SensitiveMatcher`) in its text, in what the caller said
  (final transcript segments) and in the citizen's later messages, each an alert with its context;
  the ticket is flagged `sensitive` and, per the worst severity, `sensitive_high` (2) or
  `sensitive_critical` (3); `[routing] flag_priority` turns those flags into a higher priority, as it
  does for `urgent` and `enterprise` at intake;
- its deadlines (红黄绿, `deadlines.ticket_clocks`): by the category the agent chose, else the best
  suggestion's; the enterprise line's 2110 clocks when the ticket is flagged `enterprise` or its
  category is an enterprise one;
- its place (`merge.Gazetteer`): the district and street named in what the citizen said or in the
  address, which the merge step (主单 + 子单, `merge.merge_target`) buckets it by;
- its queue: a flag triage added that `[routing] flag_queue` routes (a category marked enterprise
  puts a waiting ticket on the 政企通 line's own queue and skill, as the line's number would have at
  intake); a ticket offered or taken stays where it is.

A ticket whose history already has triage's line raises `AlreadyTriaged`: a repeat after a crash
writes nothing.

`reassess(ticket, triager)` is what triage does when the citizen says more on a ticket it has
triaged (a final transcript segment while the call is up, a follow-up message): the sensitive
words in what is new, merged into the ticket's alerts, with the flags and priority they ask for;
None when nothing new was found (then nothing is written).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from gateway.errors import Conflict
from gateway.ivr.calendar import Calendar
from gateway.ticket import (
    MAX_ALERTS,
    MAX_PRIORITY,
    AlertSource,
    DeadlineClock,
    SensitiveAlert,
    Ticket,
)
from gateway.triage.catalogue import Category
from gateway.triage.deadlines import ticket_clocks
from gateway.triage.dispatch import DispatchModel, suggest
from gateway.triage.merge import Gazetteer, MergeSettings
from gateway.triage.sensitive import SensitiveMatcher

ACTOR = "triage"
ACTION = "triaged"
REASSESSED = "reassessed"  # the history line of alerts found in what the citizen said after triage
SENSITIVE_FLAG = "sensitive"
SEVERITY_FLAGS: Mapping[int, str] = {2: "sensitive_high", 3: "sensitive_critical"}
ENTERPRISE_FLAG = "enterprise"


class AlreadyTriaged(Conflict):
    """The ticket's history already has the triage line: a repeat after a crash, nothing to write."""


@dataclass(frozen=True, slots=True)
class Triager:
    """What triage was built from: the dispatch model, the sensitive-word matcher, the catalogue by
    id, the working-day calendar, the flags' priorities (`[routing] flag_priority`), and the
    merge settings with their gazetteer (`[triage.merge]`)."""

    model: DispatchModel
    matcher: SensitiveMatcher
    categories: Mapping[str, Category]
    calendar: Calendar
    flag_priority: Mapping[str, int]
    merge: MergeSettings = field(default_factory=MergeSettings)
    flag_queue: Mapping[str, str] = field(default_factory=dict)  # `[routing] flag_queue`
    gazetteer: Gazetteer = field(default_factory=lambda: Gazetteer(()))


def said(ticket: Ticket) -> Iterator[tuple[AlertSource, str]]:
    """What the citizen wrote or said, piece by piece, with where each piece is on the ticket. The
    conversation's first message is the ticket's text, so it is not read twice."""
    if ticket.text:
        yield "text", ticket.text
    for segment in ticket.transcript:
        if segment.speaker == "caller" and segment.final and segment.text:
            yield "transcript", segment.text
    for message in ticket.messages:
        if message.direction == "in" and message.id != ticket.message_id and message.text:
            yield "message", message.text


def ticket_text(ticket: Ticket) -> str:
    """What the citizen said, as one text: what the dispatch suggestion reads."""
    return "\n".join(text for _, text in said(ticket)).strip()


def sensitive_alerts(ticket: Ticket, matcher: SensitiveMatcher, now: datetime) -> tuple[SensitiveAlert, ...]:
    """Every sensitive word in what the citizen wrote or said (the same word in the same words
    once), worst first, at most `MAX_ALERTS`."""
    found: dict[tuple[str, str], SensitiveAlert] = {}
    for source, text in said(ticket):
        for match in matcher.scan(text):
            alert = SensitiveAlert(
                word=match.word,
                category=match.category,
                severity=match.severity,
                context=match.context,
                source=source,
                at=now,
            )
            found.setdefault((match.word, match.context), alert)
    return tuple(sorted(found.values(), key=lambda alert: -alert.severity)[:MAX_ALERTS])


def alert_flags(alerts: tuple[SensitiveAlert, ...]) -> tuple[str, ...]:
    """`sensitive` for any alert, and the worst severity's own flag when it has one."""
    if not alerts:
        return ()
    worst = SEVERITY_FLAGS.get(max(alert.severity for alert in alerts))
    return (SENSITIVE_FLAG,) if worst is None else (SENSITIVE_FLAG, worst)


def raised_priority(priority: int, flags: tuple[str, ...], flag_priority: Mapping[str, int]) -> int:
    """The priority a ticket's flags ask for, never below what it has."""
    return min(max([priority, *(flag_priority.get(flag, 0) for flag in flags)]), MAX_PRIORITY)


def deadline_clocks(ticket: Ticket, category: Category | None, calendar: Calendar) -> tuple[DeadlineClock, ...]:
    """The ticket's clocks from its category's deadline class (none without a category), on the
    enterprise line when it is flagged or its category is an enterprise one."""
    if category is None:
        return ()
    enterprise = ENTERPRISE_FLAG in ticket.flags or category.enterprise
    clocks = ticket_clocks(ticket.received_at, category.deadline, enterprise, calendar)
    return tuple(DeadlineClock(name=clock.name, limit=str(clock.limit), due=clock.due) for clock in clocks)


def flagged_queue(ticket: Ticket, flags: tuple[str, ...], flag_queue: Mapping[str, str]) -> str:
    """The queue a waiting ticket moves to for a flag it did not have (`[routing] flag_queue`),
    else its own: intake routed it by the flags it came with."""
    if ticket.status != "queued":
        return ticket.queue
    added = [flag for flag in flags if flag not in ticket.flags and flag in flag_queue]
    return flag_queue[added[0]] if added else ticket.queue


def was_triaged(ticket: Ticket) -> bool:
    return any(entry.actor == ACTOR and entry.action == ACTION for entry in ticket.history)


def assess(ticket: Ticket, triager: Triager, now: datetime) -> Ticket:
    """The ticket with everything triage decides about it (see the module's docstring)."""
    if was_triaged(ticket):
        raise AlreadyTriaged(f"ticket {ticket.id} was triaged before")
    text = ticket_text(ticket)
    suggestions = suggest(triager.model, text)
    alerts = sensitive_alerts(ticket, triager.matcher, now)
    chosen = ticket.category or (suggestions[0].category if suggestions else "")
    category = triager.categories.get(chosen)
    # A category the catalogue marks enterprise puts the ticket on the 政企通 line (priority, 2110).
    enterprise = (ENTERPRISE_FLAG,) if category is not None and category.enterprise else ()
    flags = tuple(dict.fromkeys([*ticket.flags, *alert_flags(alerts), *enterprise]))
    return ticket.model_copy(
        update={
            "queue": flagged_queue(ticket, flags, triager.flag_queue),
            "suggestions": suggestions,
            "alerts": alerts,
            "flags": flags,
            "priority": raised_priority(ticket.priority, flags, triager.flag_priority),
            "clocks": deadline_clocks(ticket, category, triager.calendar),
            "place": triager.gazetteer.place(f"{ticket.address}\n{text}"),
        }
    )


def alert_key(alert: SensitiveAlert) -> tuple[str, str]:
    """What makes two alerts the same: the word, in the same words around it."""
    return alert.word, alert.context


def reassess(ticket: Ticket, triager: Triager, now: datetime) -> tuple[Ticket, tuple[SensitiveAlert, ...]] | None:
    """The triaged ticket with the sensitive words found in everything the citizen said since,
    and those new alerts; None when there are none (see the module)."""
    known = {alert_key(alert) for alert in ticket.alerts}
    found = [alert for alert in sensitive_alerts(ticket, triager.matcher, now) if alert_key(alert) not in known]
    # Kept the way the first triage keeps them: worst first, at most MAX_ALERTS (what falls off
    # that list is not new: it would be found and dropped again each time).
    alerts = tuple(sorted((*ticket.alerts, *found), key=lambda alert: -alert.severity)[:MAX_ALERTS])
    new = tuple(alert for alert in alerts if alert_key(alert) not in known)
    if not new:
        return None
    flags = tuple(dict.fromkeys([*ticket.flags, *alert_flags(alerts)]))
    priority = raised_priority(ticket.priority, flags, triager.flag_priority)
    return ticket.model_copy(update={"alerts": alerts, "flags": flags, "priority": priority}), new
