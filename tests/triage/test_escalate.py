"""The 督办 loop against a real Redis, with the time passed in: triage schedules a ticket by its
first possible escalation; a ticket overdue on Friday gets its reminder when Monday opens and its
report five working days later, each once however often and however many loops run; a ticket
submitted in time or closed is never escalated."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.config import GatewayConfig
from gateway.errors import ConfigError
from gateway.messages import Escalated
from gateway.queue import TicketQueue
from gateway.shell.embedded_redis import EmbeddedRedis
from gateway.ticket import Ticket
from gateway.triage.deadlines import ESCALATED, ESCALATED_BY
from gateway.triage.escalate import Escalator
from gateway.triage.service import Triage, build_triager
from tests.conftest import ConfigFactory
from tests.helpers import Seat, queued_ticket, running_gateway
from tests.ivr.test_calendar import OFFICE
from tests.redis_typed import stream_entries

CST = timezone(timedelta(hours=8))
CATEGORY = "social_insurance"  # 3 working days in the example catalogue


def local(month: int, day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=CST)


RECEIVED = local(3, 10, 10)  # Tuesday: due Friday 13 March at 17:30
DUE = local(3, 13, 17, 30)
REMINDER = local(3, 16, 8, 30)  # Monday's opening
REPORT = local(3, 23, 8, 30)  # 5 working days after it


@pytest.fixture
def escalate_config(config_factory: ConfigFactory, catalogue_path: Path) -> GatewayConfig:
    return config_factory(
        triage={"enabled": True, "catalogue": str(catalogue_path), "escalate_batch": 3},
        deadlines={"calendar": OFFICE.model_dump(mode="json")},
    )


@pytest.fixture
async def queue(escalate_config: GatewayConfig, redis_client: aioredis.Redis) -> TicketQueue:
    queue = TicketQueue(redis_client, escalate_config)
    await queue.ensure_groups()
    return queue


@pytest.fixture
async def triage(queue: TicketQueue, escalate_config: GatewayConfig) -> Triage:
    return Triage(queue.live, queue, build_triager(escalate_config), name="only")


async def overdue_ticket(queue: TicketQueue, triage: Triage, message_id: str) -> str:
    """A ticket received on Tuesday under a 3-working-day category, triaged (so scheduled)."""
    ticket = queued_ticket(message_id, text="社保断缴了怎么补缴", category=CATEGORY, received_at=RECEIVED)
    ticket_id = (await queue.intake(ticket, "test")).ticket_id
    await triage.triage(ticket_id)
    return ticket_id


def escalated(ticket: Ticket) -> list[tuple[str, str]]:
    return [
        (entry.detail["clock"], entry.detail["kind"])
        for entry in ticket.history
        if (entry.actor, entry.action) == (ESCALATED_BY, ESCALATED)
    ]


async def sent(queue: TicketQueue) -> list[Escalated]:
    return [
        Escalated.parse(fields["m"]) for _, fields in stream_entries(await queue.redis.xrange(queue.keys.escalations))
    ]


def ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


async def test_triage_schedules_a_ticket_by_its_first_possible_escalation(queue: TicketQueue, triage: Triage) -> None:
    ticket_id = await overdue_ticket(queue, triage, "m-schedule")
    ticket = await queue.get(ticket_id)
    assert [(clock.name, clock.due) for clock in ticket.clocks] == [("resolve", DUE)]
    assert await queue.redis.zscore(queue.keys.escalate, ticket_id) == ms(REMINDER)


async def test_a_ticket_overdue_on_friday_is_reminded_on_monday_and_reported_five_working_days_later(
    queue: TicketQueue, triage: Triage, escalate_config: GatewayConfig
) -> None:
    ticket_id = await overdue_ticket(queue, triage, "m-friday")
    loop = Escalator(queue.live, queue)
    assert await loop.escalate_due(local(3, 13, 18)) == 0, "overdue on Friday evening: nothing yet"
    assert await loop.escalate_due(local(3, 15, 12)) == 0, "nor on Sunday"
    assert await loop.escalate_due(local(3, 16, 8, 29)) == 0
    assert await loop.escalate_due(REMINDER) == 1
    assert await loop.escalate_due(local(3, 16, 9, 30)) == 0, "the loop's next turn: sent once"
    assert escalated(await queue.get(ticket_id)) == [("resolve", "reminder")]
    assert await sent(queue) == [Escalated(ticket_id, "general", "resolve", "reminder", DUE, REMINDER)]
    assert await queue.redis.zscore(queue.keys.escalate, ticket_id) == ms(REPORT), "looked at again for the report"

    assert await loop.escalate_due(local(3, 20, 17)) == 0
    assert await loop.escalate_due(REPORT) == 1
    assert await loop.escalate_due(REPORT) == 0
    ticket = await queue.get(ticket_id)
    assert escalated(ticket) == [("resolve", "reminder"), ("resolve", "report")]
    assert [event.kind for event in await sent(queue)] == ["reminder", "report"]
    assert await queue.redis.zscore(queue.keys.escalate, ticket_id) is None, "nothing more can be owed"
    assert ticket.status == "queued", "escalating changes no ticket's place"


@pytest.fixture
async def other_client(redis_server: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_two_loops_at_once_send_each_event_once(
    queue: TicketQueue, triage: Triage, escalate_config: GatewayConfig, other_client: aioredis.Redis
) -> None:
    ids = [await overdue_ticket(queue, triage, f"m-race-{i}") for i in range(8)]  # batches of 3
    first = Escalator(queue.live, queue)
    second = Escalator(queue.live, TicketQueue(other_client, escalate_config))  # another process's connection
    for moment in (REMINDER, REPORT):
        await asyncio.gather(first.escalate_due(moment), second.escalate_due(moment))
    assert first.sent + second.sent == 16
    for ticket_id in ids:
        assert escalated(await queue.get(ticket_id)) == [("resolve", "reminder"), ("resolve", "report")]
    assert len(await sent(queue)) == 16
    assert await queue.redis.zcard(queue.keys.escalate) == 0


async def test_a_loop_that_read_a_ticket_before_another_sent_its_event_sends_nothing(
    queue: TicketQueue, triage: Triage, escalate_config: GatewayConfig, other_client: aioredis.Redis
) -> None:
    # Both loops read the ticket before either wrote (or one wrote and crashed before it knew):
    # the second write finds the event recorded beside the ticket.
    ticket_id = await overdue_ticket(queue, triage, "m-stale")
    (read,) = await queue.tickets([ticket_id])
    first = Escalator(queue.live, queue)
    second = Escalator(queue.live, TicketQueue(other_client, escalate_config))
    assert await first.escalate(ticket_id, read, REMINDER) == 1
    assert await second.escalate(ticket_id, read, REMINDER) == 0
    assert escalated(await queue.get(ticket_id)) == [("resolve", "reminder")]
    assert len(await sent(queue)) == 1


async def test_a_ticket_submitted_in_time_or_closed_is_never_escalated(queue: TicketQueue, triage: Triage) -> None:
    in_time = await overdue_ticket(queue, triage, "m-in-time")
    closed = await overdue_ticket(queue, triage, "m-closed")
    offered = await queue.offer("a1", ["general"])
    assert offered is not None and offered.id == in_time
    await queue.accept(in_time, "a1")
    await queue.submit(in_time, "a1", now=local(3, 13, 16))  # before Friday's close
    await queue.abandon(closed, "caller_hung_up")
    assert await queue.redis.zcard(queue.keys.escalate) == 0, "closing a ticket unschedules it"
    loop = Escalator(queue.live, queue)
    assert await loop.escalate_due(local(4, 30, 12)) == 0

    # A loop that took the ticket as due just before it was closed writes nothing for it either.
    await queue.redis.zadd(queue.keys.escalate, {closed: ms(REMINDER)})
    (read,) = await queue.tickets([closed])
    assert read is not None
    assert await loop.escalate(closed, read.model_copy(update={"status": "queued"}), REMINDER) == 0
    assert await queue.redis.zcard(queue.keys.escalate) == 0
    for ticket_id in (in_time, closed):
        assert escalated(await queue.get(ticket_id)) == []
    assert await sent(queue) == []


async def test_a_gone_ticket_leaves_the_schedule(queue: TicketQueue) -> None:
    await queue.redis.zadd(queue.keys.escalate, {"01KGONE0000000000000000000": ms(REMINDER), "not-an-id": 1})
    assert await Escalator(queue.live, queue).escalate_due(datetime(2026, 12, 1, tzinfo=UTC)) == 0
    assert await queue.redis.zcard(queue.keys.escalate) == 0


def test_the_loops_settings_are_checked_by_field(config_factory: ConfigFactory) -> None:
    triage = config_factory().triage
    assert (triage.escalate_every, triage.escalate_batch) == (60.0, 100)
    with pytest.raises(ConfigError) as caught:
        config_factory(triage={"escalate_every": 0, "escalate_batch": 1001})
    assert {str(field).split(":")[0] for field in caught.value.fields} == {
        "triage.escalate_every",
        "triage.escalate_batch",
    }


async def test_the_seat_holding_an_overdue_ticket_is_told_of_each_event(
    escalate_config: GatewayConfig, catalogue_path: Path
) -> None:
    # The gateway serves the seat; the loop runs beside it, as any triage process's would (none in
    # the core: its own loop, on Redis's clock, would find the March ticket overdue at once).
    config = escalate_config.model_copy(
        update={"triage": escalate_config.triage.model_copy(update={"in_core": False})}
    )
    async with running_gateway(config) as (gateway, bound):
        seat = await Seat.connect(bound, "a1")
        triage = Triage(gateway.queue.live, gateway.queue, build_triager(escalate_config), name="beside")
        ticket_id = await overdue_ticket(gateway.queue, triage, "m-seat")
        assert (await seat.expect("offer"))["ticket"]["id"] == ticket_id
        await seat.send(type="accept", ticket=ticket_id)
        await seat.expect("ticket")
        loop = Escalator(gateway.queue.live, gateway.queue)
        assert await loop.escalate_due(REMINDER) == 1
        frame = await seat.expect("escalated")
        assert (frame["ticket"], frame["clock"], frame["kind"]) == (ticket_id, "resolve", "reminder")
        assert datetime.fromisoformat(frame["due"]) == DUE and frame["seq"], "journaled: a seat away gets it back"
        assert await loop.escalate_due(REPORT) == 1
        assert (await seat.expect("escalated"))["kind"] == "report"
        await seat.close()
