"""Conversations: a citizen's follow-up on the same channel joins their open ticket, once, within
the window (time injected: the message's own time decides), and reaches the seat holding it."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.channels.contract import ChannelIntake, InboundMessage, Taken, remembered_ids
from gateway.config import GatewayConfig
from gateway.queue import TicketQueue
from gateway.queue.desk import IntakeDesk
from gateway.ticket import utcnow
from tests.helpers import Seat, running_gateway

CITIZEN = "13800138000"


def sms(text: str, message_id: str, at: datetime, source: str = CITIZEN, **fields: Any) -> InboundMessage:
    return InboundMessage("sms", source, text, message_id, at, **fields)


async def channel_intake(client: aioredis.Redis, config: GatewayConfig) -> tuple[ChannelIntake, TicketQueue]:
    queue = TicketQueue(client, config)
    await queue.ensure_groups()
    return ChannelIntake(IntakeDesk(queue, queue.live), queue, queue.live, 600.0), queue


async def first_report(intake: ChannelIntake) -> tuple[datetime, Taken]:
    """The citizen's first SMS (路灯坏了), taken now: its time and what the intake made of it."""
    start = utcnow()
    return start, await intake.take(sms("路灯坏了", "m-1", start))


@pytest.fixture
async def desk(redis_client: aioredis.Redis, config: GatewayConfig) -> tuple[ChannelIntake, TicketQueue]:
    """The channels' intake on the test's config, and the queue it files into."""
    return await channel_intake(redis_client, config)


async def test_a_follow_up_within_the_window_joins_the_open_ticket(
    desk: tuple[ChannelIntake, TicketQueue], redis_client: aioredis.Redis
) -> None:
    intake, queue = desk
    start, first = await first_report(intake)
    second = await intake.take(sms("在幸福路十二号", "m-2", start + timedelta(hours=23)))
    assert first.outcome == "created" and second == type(second)(first.ticket_id, "joined")
    ticket = await queue.get(first.ticket_id)
    assert [(m.direction, m.id, m.text) for m in ticket.messages] == [
        ("in", "m-1", "路灯坏了"),
        ("in", "m-2", "在幸福路十二号"),
    ]
    assert ticket.text == "路灯坏了"
    assert [entry.action for entry in ticket.history] == ["queued", "message"]
    assert await redis_client.xlen(queue.keys.created) == 1


async def test_a_message_after_the_window_opens_a_new_ticket(desk: tuple[ChannelIntake, TicketQueue]) -> None:
    intake, _ = desk
    start, first = await first_report(intake)
    later = await intake.take(sms("又坏了", "m-2", start + timedelta(hours=24, seconds=1)))
    assert later.outcome == "created" and later.ticket_id != first.ticket_id
    following = await intake.take(sms("还是没人修", "m-3", start + timedelta(hours=25)))
    assert following.ticket_id == later.ticket_id and following.outcome == "joined"  # the newest is open


async def test_a_redelivered_follow_up_is_appended_once(desk: tuple[ChannelIntake, TicketQueue]) -> None:
    intake, queue = desk
    start, first = await first_report(intake)
    follow_up = sms("在幸福路十二号", "m-2", start + timedelta(minutes=5))
    assert (await intake.take(follow_up)).outcome == "joined"
    assert (await intake.take(follow_up)).outcome == "duplicate"
    assert (await intake.take(sms("路灯坏了", "m-1", start))).outcome == "duplicate"
    ticket = await queue.get(first.ticket_id)
    assert [m.id for m in ticket.messages] == ["m-1", "m-2"]


async def test_another_citizen_or_a_settled_ticket_is_not_joined(
    desk: tuple[ChannelIntake, TicketQueue], redis_client: aioredis.Redis
) -> None:
    intake, queue = desk
    start, first = await first_report(intake)
    other = await intake.take(sms("噪音扰民", "m-2", start, source="13900139000"))
    assert other.outcome == "created" and other.ticket_id != first.ticket_id
    await queue.abandon(first.ticket_id, "test")
    assert not await redis_client.exists(queue.keys.conversation("sms", CITIZEN))
    again = await intake.take(sms("路灯还是坏的", "m-3", start + timedelta(minutes=1)))
    assert again.outcome == "created" and again.ticket_id not in (first.ticket_id, other.ticket_id)


async def test_a_conversation_keeps_its_last_messages_and_counts_the_dropped(
    redis_client: aioredis.Redis, config_factory: Any
) -> None:
    intake, queue = await channel_intake(redis_client, config_factory(conversations={"max_messages": 3}))
    start = utcnow()
    first = await intake.take(sms("第1条", "m-1", start))
    for number in range(2, 6):
        await intake.take(sms(f"第{number}条", f"m-{number}", start + timedelta(minutes=number)))
    ticket = await queue.get(first.ticket_id)
    assert [m.text for m in ticket.messages] == ["第3条", "第4条", "第5条"]
    assert ticket.messages_dropped == 2 and ticket.text == "第1条"


async def test_the_offer_carries_the_conversation_and_the_holding_seat_gets_each_new_message(
    config: GatewayConfig,
) -> None:
    async with running_gateway(config) as (gateway, bound):
        intake = ChannelIntake(gateway.desk, gateway.queue, gateway.live, 600.0)
        start, first = await first_report(intake)
        await intake.take(sms("在幸福路十二号", "m-2", start + timedelta(seconds=1)))
        seat = await Seat.connect(bound, "a1")
        offer = (await seat.expect("offer"))["ticket"]
        assert offer["id"] == first.ticket_id
        assert [m["text"] for m in offer["messages"]] == ["路灯坏了", "在幸福路十二号"]
        await seat.send(type="accept", ticket=first.ticket_id)
        await seat.expect("ticket")
        await intake.take(sms("晚上特别黑", "m-3", start + timedelta(seconds=2)))
        frame = await seat.expect("message")
        assert frame["ticket"] == first.ticket_id
        assert (frame["message"]["direction"], frame["message"]["text"]) == ("in", "晚上特别黑")
        await seat.send(type="submit", ticket=first.ticket_id)
        while (await seat.expect("ack")).get("status") != "submitted":
            pass  # the accept's
        after = await intake.take(sms("谢谢", "m-4", start + timedelta(seconds=3)))
        assert after.outcome == "created"  # the submitted ticket's conversation ended
        submitted = await gateway.queue.get(first.ticket_id)
        assert [m.id for m in submitted.messages] == ["m-1", "m-2", "m-3"]
        await seat.close()


@pytest.mark.parametrize(("seconds", "scope"), [(0, 0), (599.9, 0), (600, 1), (1800.5, 3)])
def test_a_fingerprint_is_remembered_in_its_window_and_looked_up_in_the_one_before(seconds: float, scope: int) -> None:
    at = datetime.fromtimestamp(1_800_000_000 + seconds).astimezone()  # a multiple of 600 s
    base = 1_800_000_000 // 600
    message = sms("好的", "f00d", at, id_is_fingerprint=True)
    assert remembered_ids(message, 600.0) == (f"f00d.{base + scope}", f"f00d.{base + scope - 1}")
    assert remembered_ids(sms("好的", "0A1B2C3D4E5F6071", at), 600.0) == ("0A1B2C3D4E5F6071",)
