"""The citizen's index (历史工单), written by the INTAKE script against a real Redis: one citizen
across channels (an SMS from a number, a web form giving it, a call from it), a WeChat openid of
their own; trimmed to the newest `max_tickets` and to the window; a repeated intake adds nothing;
`citizen_history` reads it back newest first, without later or expired tickets."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis.asyncio as aioredis

from gateway.queue import TicketQueue
from gateway.ticket import Citizen, Ticket, utcnow
from tests.conftest import ConfigFactory
from tests.helpers import queued_ticket, voice_ticket
from tests.redis_typed import texts

PHONE = "13812345678"
DAY = 86400


async def queue_of(config_factory: ConfigFactory, client: aioredis.Redis, **history: int) -> TicketQueue:
    queue = TicketQueue(client, config_factory(history=history) if history else config_factory())
    await queue.ensure_groups()
    return queue


async def indexed(queue: TicketQueue, identity: str) -> list[str]:
    """The ids the citizen's index holds under `identity`, oldest first."""
    return texts(await queue.redis.zrange(queue.keys.citizen_tickets(identity), 0, -1))


def contact(n: int, days_ago: float = 0, **fields: object) -> Ticket:
    return queued_ticket(f"h-{n}", received_at=utcnow() - timedelta(days=days_ago), **fields)


async def test_one_citizen_across_channels_is_one_index_and_a_repeat_adds_nothing(
    config_factory: ConfigFactory, redis_client: aioredis.Redis
) -> None:
    queue = await queue_of(config_factory, redis_client)
    sms = contact(1, days_ago=2, channel="sms", citizen=Citizen(phone=PHONE), text="楼下饭店油烟太大")
    form = contact(2, days_ago=1, citizen=Citizen(phone=PHONE, name="陈先生"), text="油烟还是很大")
    wechat = contact(3, channel="wechat", citizen=Citizen(wechat_openid="oCitizen1"), text="暖气不热")
    both = contact(4, channel="wechat", citizen=Citizen(wechat_openid="oCitizen1", phone=PHONE), text="又来了")
    for ticket in (sms, form, wechat, both):
        assert (await queue.intake(ticket, "test")).created
    assert not (await queue.intake(contact(2, citizen=Citizen(phone=PHONE)), "test")).created  # a repeat
    assert await indexed(queue, f"phone:{PHONE}") == [sms.id, form.id, both.id]
    assert await indexed(queue, "wechat:oCitizen1") == [wechat.id, both.id]
    key = queue.keys.citizen_tickets(f"phone:{PHONE}")
    assert 0 < await queue.redis.pttl(key) <= 30 * DAY * 1000
    # Read back for the newest, newest first, each once (it is under both identities), with status.
    found = await queue.citizen_history(both)
    assert [ticket.id for ticket in found] == [both.id, wechat.id, form.id, sms.id]
    assert {ticket.status for ticket in found} == {"queued"}
    assert found[2].citizen.name == "陈先生"
    # Read for the web form: what came before it, not what came after.
    assert [ticket.id for ticket in await queue.citizen_history(form)] == [form.id, sms.id]


async def test_a_call_joins_the_index_of_its_callers_number(
    config_factory: ConfigFactory, redis_client: aioredis.Redis
) -> None:
    queue = await queue_of(config_factory, redis_client)
    call = voice_ticket("call-history-1", caller=PHONE)
    await queue.intake(call, "worker:w1")
    assert await indexed(queue, f"phone:{PHONE}") == [call.id]
    anonymous = queued_ticket("h-anonymous", text="匿名反映")  # no identity: no index, nothing to read
    await queue.intake(anonymous, "test")
    assert await queue.citizen_history(anonymous) == []


async def test_the_index_keeps_the_newest_max_tickets(
    config_factory: ConfigFactory, redis_client: aioredis.Redis
) -> None:
    queue = await queue_of(config_factory, redis_client, max_tickets=3)
    # Filed out of order: the index keeps the three received last, whatever the order of intake.
    contacts = [contact(n, days_ago=days, citizen=Citizen(phone=PHONE)) for n, days in enumerate((3, 5, 1, 4, 2))]
    for ticket in contacts:
        await queue.intake(ticket, "test")
    newest = sorted(contacts, key=lambda ticket: ticket.received_at)[-3:]
    assert await indexed(queue, f"phone:{PHONE}") == [ticket.id for ticket in newest]
    assert [t.id for t in await queue.citizen_history(newest[-1])] == [t.id for t in reversed(newest)]


async def test_the_index_keeps_the_window_before_now(
    config_factory: ConfigFactory, redis_client: aioredis.Redis
) -> None:
    queue = await queue_of(config_factory, redis_client, window=10 * DAY, repeat_window=DAY)
    old, recent, now = (
        contact(n, days_ago=days, citizen=Citizen(phone=PHONE)) for n, days in ((1, 11), (2, 9), (3, 0))
    )
    for ticket in (old, recent):
        await queue.intake(ticket, "test")
    assert await indexed(queue, f"phone:{PHONE}") == [recent.id]  # the old one left at once
    assert 9 * DAY * 1000 < await queue.redis.pttl(queue.keys.citizen_tickets(f"phone:{PHONE}")) <= 10 * DAY * 1000
    await queue.intake(now, "test")
    assert [ticket.id for ticket in await queue.citizen_history(now)] == [now.id, recent.id]


async def test_an_expired_ticket_is_left_out_of_what_is_read(
    config_factory: ConfigFactory, redis_client: aioredis.Redis
) -> None:
    queue = await queue_of(config_factory, redis_client)
    gone, kept, now = (contact(n, days_ago=3 - n, citizen=Citizen(phone=PHONE)) for n in range(3))
    for ticket in (gone, kept, now):
        await queue.intake(ticket, "test")
    await queue.redis.delete(queue.keys.ticket(gone.id))  # as its ticket_ttl would
    assert [ticket.id for ticket in await queue.citizen_history(now)] == [now.id, kept.id]


@pytest.mark.parametrize("same_millisecond", [True, False])
async def test_two_contacts_within_a_millisecond_keep_their_order(
    config_factory: ConfigFactory, redis_client: aioredis.Redis, same_millisecond: bool
) -> None:
    queue = await queue_of(config_factory, redis_client)
    at = utcnow().replace(microsecond=123_400)
    later = at + timedelta(microseconds=300 if same_millisecond else 3000)
    first = queued_ticket("h-ms-1", received_at=at, channel="sms", citizen=Citizen(phone=PHONE))
    second = queued_ticket("h-ms-2", received_at=later, citizen=Citizen(phone=PHONE))
    for ticket in (second, first):  # filed in the other order
        await queue.intake(ticket, "test")
    assert [ticket.id for ticket in await queue.citizen_history(first)] == [first.id]
    assert [ticket.id for ticket in await queue.citizen_history(second)] == [second.id, first.id]
