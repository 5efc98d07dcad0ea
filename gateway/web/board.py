"""The supervisors' wallboard, pure: the board computed from counters already read, and the seats'
presence as a diff of what one process saw against what it last wrote.

`gateway/web/wallboard.py` reads Redis and the dispatcher, calls these, and fans the frame out.
Times are milliseconds of the Redis or host clock as given; the page ages them itself, so a board
that did not change is the same frame (and is not sent again).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from gateway.config import GatewayConfig
from gateway.messages import Alerted, Escalated, SurgeWarning
from gateway.queue.store import QueueStats
from gateway.ticket import Ticket
from gateway.triage.deadlines import resolve_clock
from gateway.triage.merge import category_of

HOURS = 24
NODE_PREFIX = "voice.node."  # the media workers' per-IVR-node counters in `hg:metrics`
PROCESS_STALE_MS = 30_000  # a process that has not beaten for this long is gone
OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class StreamFigures:
    """One queue stream of one priority, as the consumer group `seats` sees it."""

    length: int  # entries: every open ticket of the stream
    pending: int  # entries delivered to a consumer (offered, claimed, or returned to `_pool`)
    pooled: int  # of those, returned to `_pool`: waiting again
    oldest_ms: int | None  # the enqueue time of its oldest waiting entry (None: none waits)

    @property
    def waiting(self) -> int:
        """Not held by an agent: never delivered, or returned to the pool."""
        return max(self.length - self.pending, 0) + self.pooled

    @property
    def with_agents(self) -> int:
        return self.pending - self.pooled


@dataclass(frozen=True, slots=True)
class Presence:
    """An agent's seat as one process sees it."""

    state: str
    since_ms: int


def entry_ms(entry_id: str) -> int:
    """The time in a stream entry's id (`{ms}-{seq}`)."""
    return int(entry_id.partition("-")[0])


def _ratio(share: float | None) -> float | None:
    return None if share is None else round(share, 4)


def queue_row(name: str, label: str, streams: Iterable[StreamFigures], stats: QueueStats) -> dict[str, object]:
    """A queue's line on the wall: its streams summed, today's counters."""
    figures = list(streams)
    oldest = [f.oldest_ms for f in figures if f.oldest_ms is not None and f.waiting]
    average = stats.average_wait_s
    return {
        "name": name,
        "label": label or name,
        "waiting": sum(f.waiting for f in figures),
        "with_agents": sum(f.with_agents for f in figures),
        "oldest_ms": min(oldest) if oldest else None,
        "answered": stats.answered,
        "service_level": _ratio(stats.service_level),
        "average_answer_s": None if average is None else round(average, 1),
        "abandoned": stats.abandoned,
        "handled": stats.submitted,
    }


def agent_rows(config: GatewayConfig, seats: Mapping[str, Presence]) -> list[dict[str, object]]:
    """Every configured agent with its seat's state and since when; one without a seat is offline."""
    rows: list[dict[str, object]] = []
    for agent in config.agents:
        seat = seats.get(agent.id)
        rows.append(
            {
                "id": agent.id,
                "name": agent.name or agent.id,
                "state": seat.state if seat else OFFLINE,
                "since_ms": seat.since_ms if seat else None,
            }
        )
    return rows


def intake_series(counts: Mapping[str, str]) -> dict[str, list[int]]:
    """`{channel}:{hour}` counters -> each channel's 24 hourly counts, channels sorted."""
    series: dict[str, list[int]] = {}
    for field, value in counts.items():
        channel, _, hour = field.rpartition(":")
        if channel and hour.isdigit() and int(hour) < HOURS:
            series.setdefault(channel, [0] * HOURS)[int(hour)] += int(value)
    return dict(sorted(series.items()))


def node_calls(metrics: Mapping[str, str]) -> dict[str, int]:
    """The calls that reached each IVR node (the media workers' `voice.node.{id}` counters)."""
    return {
        field.removeprefix(NODE_PREFIX): int(value)
        for field, value in sorted(metrics.items())
        if field.startswith(NODE_PREFIX)
    }


def process_beat(version: int, now_ms: int) -> str:
    """A process's field value in `hg:wallboard:processes`."""
    return f"{version} {now_ms}"


def live_processes(beats: Mapping[str, str], now_ms: int) -> tuple[list[dict[str, object]], list[str]]:
    """Processes that beat within `PROCESS_STALE_MS`, with their config version; and the fields of
    those that did not (or are unreadable), for the reader to remove."""
    live: list[dict[str, object]] = []
    stale: list[str] = []
    for process, value in sorted(beats.items()):
        version, _, beat = value.partition(" ")
        if not (version.isdigit() and beat.isdigit()) or now_ms - int(beat) > PROCESS_STALE_MS:
            stale.append(process)
            continue
        live.append({"process": process, "config_version": int(version)})
    return live, stale


def presence_changes(
    written: Mapping[str, Presence], seen: Mapping[str, str], now_ms: int
) -> tuple[dict[str, Presence], dict[str, Presence], list[str]]:
    """What this process's seats (`seen`: agent -> state) change against what it last wrote:
    (the presence it now holds, the agents to write, the agents whose seat left here)."""
    holds: dict[str, Presence] = {}
    changed: dict[str, Presence] = {}
    for agent, state in seen.items():
        before = written.get(agent)
        if before is not None and before.state == state:
            holds[agent] = before
        else:
            holds[agent] = changed[agent] = Presence(state, now_ms)
    gone = [agent for agent in written if agent not in seen]
    return holds, changed, gone


@dataclass(frozen=True, slots=True)
class Counters:
    """Everything the board is computed from, as read in one round."""

    streams: Mapping[str, list[StreamFigures]]  # queue -> its streams
    stats: Mapping[str, QueueStats]
    seats: Mapping[str, Presence]
    intake: Mapping[str, str]
    metrics: Mapping[str, str]
    processes: list[dict[str, object]]
    alerts: tuple[Alerted, ...] = ()  # the newest first (`hg:alerts`)
    late: tuple[Ticket, ...] = ()  # open tickets past the yellow of their resolve clock (`hg:clocks`)
    surges: tuple[SurgeWarning, ...] = ()  # the newest first (`hg:surges`)
    escalations: tuple[Escalated, ...] = ()  # the newest first (`hg:escalations`)


ALERTS_SHOWN = 20  # the newest sensitive-word alerts on the wall
SURGES_SHOWN = 10  # the newest surge warnings on the wall


def surge_rows(surges: Iterable[SurgeWarning]) -> list[dict[str, object]]:
    """One row per surge warning, newest first: category, place, the window's count, the usual."""
    return [
        {"category": s.category, "place": s.place, "count": s.count, "usual": s.usual, "at": s.at}
        for s in list(surges)[:SURGES_SHOWN]
    ]


ESCALATIONS_SHOWN = 20  # the newest 督办 events on the wall


def escalation_rows(escalations: Iterable[Escalated]) -> list[dict[str, object]]:
    """One row per 督办 event sent, newest first: the ticket, its queue, which clock, reminder or
    report, the clock's due time and when the event fell due."""
    rows: list[dict[str, object]] = []
    for e in list(escalations)[:ESCALATIONS_SHOWN]:
        row = {"ticket": e.ticket, "queue": e.queue, "clock": e.clock, "kind": e.kind}
        rows.append({**row, "due": e.due.isoformat(), "at": e.at.isoformat()})
    return rows


LATE_SHOWN = 30  # red and yellow tickets on the wall, the longest yellow first


def late_rows(tickets: Iterable[Ticket], now: datetime) -> list[dict[str, object]]:
    """One row per open ticket whose resolve clock is yellow or red: red (overdue) first, then the
    nearest due; with its queue, category (the agent's, else triage's first suggestion) and due."""
    rows: list[dict[str, object]] = []
    for ticket in tickets:
        resolve = resolve_clock(ticket)
        if resolve is None:
            continue
        category = category_of(ticket)
        colour = "red" if now >= resolve.due else "yellow"
        rows.append({"ticket": ticket.id, "queue": ticket.queue, "category": category, "limit": resolve.limit,
                     "due": resolve.due.isoformat(), "colour": colour})  # fmt: skip
    rows.sort(key=lambda row: (row["colour"] != "red", str(row["due"])))
    return rows[:LATE_SHOWN]


def alert_rows(alerts: Iterable[Alerted]) -> list[dict[str, object]]:
    """One row per alerted ticket, newest first: its worst severity, its categories and the words
    around the worst match (the supervisor decides whether to listen in or call back)."""
    rows: list[dict[str, object]] = []
    for alerted in alerts:
        if not alerted.alerts:
            continue
        worst = max(alerted.alerts, key=lambda alert: alert.severity)
        rows.append(
            {
                "ticket": alerted.ticket,
                "queue": alerted.queue,
                "severity": worst.severity,
                "categories": sorted({alert.category for alert in alerted.alerts}),
                "context": worst.context,
                "at": worst.at.isoformat(),
            }
        )
    return rows[:ALERTS_SHOWN]


def board(config: GatewayConfig, counters: Counters, day: str, now: datetime) -> dict[str, object]:
    """The wall's content (without its sequence number and time: equal boards are one frame);
    `now` colours the deadlines."""
    return {
        "day": day,
        "queues": [
            queue_row(q.name, q.label, counters.streams.get(q.name, []), counters.stats.get(q.name, QueueStats()))
            for q in config.queues
        ],
        "agents": agent_rows(config, counters.seats),
        "intake": intake_series(counters.intake),
        "nodes": node_calls(counters.metrics),
        "processes": counters.processes,
        "alerts": alert_rows(counters.alerts),
        "late": late_rows(counters.late, now),
        "surges": surge_rows(counters.surges),
        "escalations": escalation_rows(counters.escalations),
    }
