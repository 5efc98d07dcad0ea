from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from gateway.config import GatewayConfig
from gateway.errors import Conflict, NotFound
from gateway.queue import TicketQueue
from gateway.ticket import Ticket, new_ticket_id, utcnow
from tests.redis_typed import stream_entries, text


def make_ticket(message_id: str, queue: str = "general", priority: int = 0, text: str = "路灯坏了") -> Ticket:
    now = utcnow()
    return Ticket(
        id=new_ticket_id(now), channel="web", message_id=message_id, received_at=now, text=text,
        queue=queue, priority=priority,
    )  # fmt: skip


@pytest.fixture
async def queue(redis_client: aioredis.Redis, config: GatewayConfig) -> TicketQueue:
    q = TicketQueue(redis_client, config)
    await q.ensure_groups()
    return q


async def test_intake_is_idempotent(queue: TicketQueue) -> None:
    first = await queue.intake(make_ticket("m1"), "client:test")
    again = await queue.intake(make_ticket("m1"), "client:test")
    assert first.created and not again.created
    assert again.ticket_id == first.ticket_id
    assert await queue.waiting("general") == 1


async def test_offer_accept_submit_lifecycle(queue: TicketQueue) -> None:
    result = await queue.intake(make_ticket("m1"), "client:test")
    streams = ["general"]
    offered = await queue.offer("a1", streams)
    assert offered is not None and offered.id == result.ticket_id
    assert offered.data["status"] == "offered" and offered.data["agent"] == "a1"
    assert await queue.offer("a2", streams) is None, "one ticket is never offered twice"
    claimed = await queue.accept(offered.id, "a1")
    assert claimed.data["status"] == "claimed"
    await queue.submit(offered.id, "a1", claimed.ticket().model_copy(update={"category": "市政"}))
    assert (await queue.get(offered.id)).status == "submitted"
    entries = stream_entries(await queue.redis.xrange(queue.keys.submitted))
    assert len(entries) == 1
    published = Ticket.from_json(entries[0][1]["ticket"])
    assert published.id == offered.id and published.category == "市政"
    assert [h.action for h in published.history] == ["queued", "offered", "claimed", "submitted"]
    assert await queue.waiting("general") == 0


async def test_priority_first_then_fifo(queue: TicketQueue) -> None:
    ids = []
    for n, prio in enumerate([0, 0, 7, 5, 7]):
        ids.append((await queue.intake(make_ticket(f"m{n}", priority=prio), "t")).ticket_id)
    streams = ["general"]
    order = []
    for _ in ids:
        ticket = await queue.offer("a1", streams)
        assert ticket is not None
        order.append(ticket.id)
    assert order == [ids[2], ids[4], ids[3], ids[0], ids[1]]


async def test_declined_ticket_keeps_its_place(queue: TicketQueue) -> None:
    first = (await queue.intake(make_ticket("m1"), "t")).ticket_id
    second = (await queue.intake(make_ticket("m2"), "t")).ticket_id
    streams = ["general"]
    offered = await queue.offer("a1", streams)
    assert offered is not None and offered.id == first
    assert await queue.release(first, "a1", "declined")
    again = await queue.offer("boss", streams)
    assert again is not None and again.id == first, "a returned ticket goes before later ones"
    nxt = await queue.offer("a1", streams)
    assert nxt is not None and nxt.id == second


async def test_accept_by_wrong_agent_is_a_conflict(queue: TicketQueue) -> None:
    await queue.intake(make_ticket("m1"), "t")
    offered = await queue.offer("a1", ["general"])
    assert offered is not None
    with pytest.raises(Conflict):
        await queue.accept(offered.id, "a2")
    with pytest.raises(NotFound):
        await queue.accept("nope", "a1")


async def test_expired_offer_is_reaped(queue: TicketQueue) -> None:
    await queue.intake(make_ticket("m1"), "t")
    offered = await queue.offer("a1", ["general"])
    assert offered is not None
    assert await queue.reap(offer_grace=-10) == 1
    assert (await queue.get(offered.id)).status == "queued"
    assert (await queue.offer("a2", ["general"])) is not None


async def test_lapsed_lease_returns_claims(queue: TicketQueue) -> None:
    await queue.intake(make_ticket("m1"), "t")
    offered = await queue.offer("a1", ["general"])
    assert offered is not None
    await queue.accept(offered.id, "a1")
    await queue.hold_lease(["a1"], 30)
    assert await queue.reap() == 0, "a held lease keeps the claim"
    await queue.hold_lease(["a1"], 0.05)
    await asyncio.sleep(0.1)
    assert await queue.reap() == 1
    ticket = await queue.get(offered.id)
    assert ticket.status == "queued" and ticket.agent is None
    assert [h.action for h in ticket.history][-1] == "requeued"


async def test_abandon_removes_from_queue(queue: TicketQueue) -> None:
    tid = (await queue.intake(make_ticket("m1"), "t")).ticket_id
    await queue.abandon(tid, "caller_hung_up")
    assert (await queue.get(tid)).status == "abandoned"
    assert await queue.offer("a1", ["general"]) is None


async def test_idempotency_is_scoped_to_the_client(queue: TicketQueue) -> None:
    form = await queue.intake(make_ticket("form-0001", text="表单的诉求"), "client:webform", "webform", "f1")
    app = await queue.intake(make_ticket("form-0001", text="App的诉求"), "client:grid", "grid", "f2")
    assert form.created and app.created, "another client's id is another message"
    assert form.ticket_id != app.ticket_id
    assert (await queue.get(app.ticket_id)).text == "App的诉求"
    again = await queue.intake(make_ticket("form-0001", text="表单的诉求"), "client:webform", "webform", "f1")
    assert (again.ticket_id, again.created) == (form.ticket_id, False)
    assert await queue.waiting("general") == 2


async def test_same_key_for_another_request_is_a_conflict(queue: TicketQueue) -> None:
    first = await queue.intake(make_ticket("k-1", text="原诉求"), "client:webform", "webform", "print-a")
    with pytest.raises(Conflict):
        await queue.intake(make_ticket("k-1", text="另一个诉求"), "client:webform", "webform", "print-b")
    again = await queue.intake(make_ticket("k-1", text="原诉求"), "client:webform", "webform", "print-a")
    assert (again.ticket_id, again.created) == (first.ticket_id, False)
    assert await queue.waiting("general") == 1


async def test_the_gateways_own_ids_keep_their_shared_key(queue: TicketQueue) -> None:
    """Voice tickets and their callbacks: one per call whoever files it, found by `asr.pending`."""
    call = make_ticket("call-7-callback")
    filed = await queue.intake(call, "worker:w1")
    again = await queue.intake(make_ticket("call-7-callback", text="另一份"), "system")
    assert again.ticket_id == filed.ticket_id and not again.created
    stored = await queue.redis.get(queue.keys.idempotency(call.channel, "call-7-callback"))
    assert stored == filed.ticket_id.encode()


async def test_a_repeated_attempt_is_reported_as_created(queue: TicketQueue) -> None:
    """What a retry after a connection error sees when its first attempt did run."""
    ticket = make_ticket("m-repeat")
    first = await queue.intake(ticket, "client:webform", "webform", "p")
    repeat = await queue.intake(ticket, "client:webform", "webform", "p")
    assert first == repeat and repeat.created
    assert await queue.waiting("general") == 1


async def test_malformed_ids_name_no_ticket(queue: TicketQueue) -> None:
    tid = (await queue.intake(make_ticket("m1"), "t")).ticket_id
    for bad in (f"{tid}:h", "01ABC", f"{tid} ", "*"):
        with pytest.raises(NotFound):
            await queue.get(bad)
        with pytest.raises(NotFound):
            await queue.accept(bad, "a1")
        with pytest.raises(NotFound):
            await queue.submit(bad, "a1")
        assert not await queue.release(bad, "a1", "declined")
    assert (await queue.get(tid)).status == "queued"


async def test_the_queued_entry_is_stamped_when_the_ticket_joined_the_queue(queue: TicketQueue) -> None:
    """A voice ticket's received_at is when the call began; it joins the queue later (after the menu)."""
    call_began = utcnow() - timedelta(minutes=1)
    ticket = make_ticket("call-1").model_copy(update={"received_at": call_began})
    before = utcnow()
    result = await queue.intake(ticket, "worker:w1")
    stored = await queue.get(result.ticket_id)
    assert stored.received_at == call_began
    [queued] = [entry for entry in stored.history if entry.action == "queued"]
    assert queued.at >= before


async def test_a_days_counters_give_each_queue_its_service_level_speed_of_answer_and_outcomes(
    redis_client: aioredis.Redis, config: GatewayConfig
) -> None:
    """The queues' `service_level` (20 s for general, by default) and `max_wait` (30 s here) are what
    a supervisor reads the day's figures against."""
    queues = [q.model_copy(update={"max_wait": 30.0}) if q.name == "general" else q for q in config.queues]
    queue = TicketQueue(redis_client, config.model_copy(update={"queues": queues}))
    await queue.ensure_groups()
    answered_fast = await queue.intake(make_ticket("m1"), "client:test")
    kept_waiting = await queue.intake(make_ticket("m2"), "client:test")
    gone = await queue.intake(make_ticket("m3"), "client:test")
    # m2 joined its queue a minute ago: move its stream entry's time back (what XADD * stamps).
    entry = text(await redis_client.hget(queue.keys.ticket(kept_waiting.ticket_id), "entry"))
    old_id = f"{int(entry.split('-')[0]) - 60_000}-0"
    await redis_client.hset(queue.keys.ticket(kept_waiting.ticket_id), "entry", old_id)
    for _ in (answered_fast, kept_waiting):
        offered = await queue.offer("a1", ["general"])
        assert offered is not None
        await queue.accept(offered.id, "a1")
        await queue.submit(offered.id, "a1")
    await queue.abandon(gone.ticket_id, "caller_hung_up")
    general = (await queue.stats())["general"]
    assert (general.answered, general.in_service_level, general.submitted, general.abandoned) == (2, 1, 2, 1)
    assert general.over_max_wait == 1  # the one that waited a minute
    assert general.service_level == 0.5
    assert general.average_wait_s is not None and general.average_wait_s >= 30  # (0 + 60 s) / 2
    assert (await queue.stats())["housing"].service_level is None
