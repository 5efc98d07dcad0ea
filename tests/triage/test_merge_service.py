"""主单 + 子单 against a real Redis, through the triage consumer: thirty citizens reporting one broken
manhole cover on one street in thirty wordings become one 主单 with 29 子单; another street or
another problem stays apart; submitting the 主单 with its answer answers every 子单 once, on each
citizen's own channel, even when the consumer stops half way; agents confirm or split."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.channels.followup import question
from gateway.channels.followup_desk import FollowupDesk
from gateway.config import GatewayConfig
from gateway.errors import Conflict
from gateway.queue import TicketQueue
from gateway.ticket import Channel, Citizen, Ticket
from gateway.triage.service import LABELS_GROUP, Triage, build_triager
from tests.conftest import ConfigFactory
from tests.helpers import queued_ticket, voice_ticket
from tests.redis_typed import stream_entries
from tests.triage.conftest import EXAMPLE_CONFIG
from tests.triage.merge_contacts import MANHOLE, OTHER_PROBLEM, OTHER_STREET, STREET

ANSWER = "您反映的南大街井盖已由市政部门更换, 感谢您的监督。"
MERGE = tomllib.loads(EXAMPLE_CONFIG.read_text(encoding="utf-8"))["triage"]["merge"]
CHANNELS: tuple[Channel, ...] = ("sms", "wechat", "web", "voice")


@pytest.fixture
def merge_config(config_factory: ConfigFactory, catalogue_path: Path) -> GatewayConfig:
    return config_factory(
        triage={"enabled": True, "catalogue": str(catalogue_path), "batch": 100, "claim_idle": 0, "merge": MERGE},
        channels={
            "sms": {"enabled": True, "system_id": "hotline", "source_addr": "12345"},
            "wechat": {"enabled": True},
        },
    )


def citizen_ticket(i: int, text: str, channel: Channel | None = None) -> Ticket:
    """Citizen `i`'s contact: by SMS, WeChat, the web form or a call, in turn."""
    channel = channel or CHANNELS[i % len(CHANNELS)]
    phone = f"139{i:08d}"
    if channel == "voice":
        return voice_ticket(f"call-{i}", caller=phone, text=text)
    citizen = Citizen(wechat_openid=f"oCitizen{i}") if channel == "wechat" else Citizen(phone=phone)
    return queued_ticket(f"m-{i}", channel=channel, citizen=citizen, text=text)


async def filed(queue: TicketQueue, contacts: list[Ticket]) -> list[str]:
    return [(await queue.intake(ticket, "test")).ticket_id for ticket in contacts]


async def triaged(
    config: GatewayConfig, client: aioredis.Redis, contacts: list[Ticket]
) -> tuple[TicketQueue, Triage, list[str]]:
    """The contacts filed, then read and triaged by one consumer, in the order they came."""
    queue = TicketQueue(client, config)
    await queue.ensure_groups()
    ids = await filed(queue, contacts)
    consumer = Triage(queue.live, queue, build_triager(config), name="triage-1")
    await consumer.ensure_group()
    while batch := await consumer.read_new():
        await consumer.handle(batch)
    return queue, consumer, ids


def lines(ticket: Ticket, action: str) -> int:
    return sum(1 for entry in ticket.history if entry.action == action)


async def test_thirty_citizens_one_manhole_one_parent_with_29_children(
    merge_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    contacts = [citizen_ticket(i, text) for i, text in enumerate(MANHOLE)]
    queue, consumer, ids = await triaged(merge_config, redis_client, contacts)
    assert consumer.triaged == 30
    parent = await queue.get(ids[0])
    assert parent.place == STREET and parent.parent == ""
    assert parent.children == tuple(ids[1:])
    assert lines(parent, "child_linked") == 29
    for child_id in ids[1:]:
        child = await queue.get(child_id)
        assert child.parent == ids[0] and child.place == STREET, child.text
        assert child.status == "queued"  # still in its queue: an agent may split it
        assert lines(child, "merged") == 1 and not child.merge_confirmed
    # The seat is offered the 主单 (the oldest) with its 子单, and a 子单 with its 主单.
    offered = await queue.offer("a1", ["general"])
    assert offered is not None and offered.id == ids[0]
    assert offered.ticket().children == tuple(ids[1:])
    second = await queue.offer("a2", ["general"])
    assert second is not None and second.ticket().parent == ids[0]


async def test_another_street_or_another_problem_is_not_merged(
    merge_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    contacts = [citizen_ticket(0, MANHOLE[0]), citizen_ticket(1, OTHER_STREET), citizen_ticket(2, MANHOLE[1])]
    contacts += [citizen_ticket(3 + i, text) for i, text in enumerate(OTHER_PROBLEM)]
    queue, _, ids = await triaged(merge_config, redis_client, contacts)
    first, street, same, *problems = [await queue.get(ticket_id) for ticket_id in ids]
    assert street.place == "芝罘区/北马路" and street.parent == "" and not street.children
    assert same.parent == first.id
    for problem in problems:
        assert problem.place == STREET and problem.parent == "", problem.text
    assert (await queue.get(ids[0])).children == (same.id,)


async def test_a_repeated_triage_links_nothing_twice(merge_config: GatewayConfig, redis_client: aioredis.Redis) -> None:
    queue, consumer, ids = await triaged(merge_config, redis_client, [citizen_ticket(i, MANHOLE[i]) for i in range(3)])
    before = [await queue.get(ticket_id) for ticket_id in ids]
    for ticket_id in ids:
        await consumer.triage(ticket_id)  # a repeat after a crash
    assert consumer.repeats == 3
    assert [await queue.get(ticket_id) for ticket_id in ids] == before


async def test_one_citizens_open_tickets_are_related_not_merged(
    merge_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    contacts = [
        citizen_ticket(7, "我家楼下饭店油烟太大了", "sms"),
        citizen_ticket(7, "孩子明年上小学划片到哪个学校", "voice"),  # the same citizen calls too
        citizen_ticket(8, "暖气一点都不热", "sms"),
    ]
    queue, _, ids = await triaged(merge_config, redis_client, contacts)
    first, second, other = [await queue.get(ticket_id) for ticket_id in ids]
    assert second.related == (first.id,) and second.parent == ""
    assert first.related == () and other.related == ()


async def submit_parent(queue: TicketQueue, parent_id: str) -> Ticket:
    """An agent takes the 主单 and submits it with an answer, as the seat does."""
    offered = await queue.offer("a1", ["general"])
    assert offered is not None and offered.id == parent_id
    await queue.accept(parent_id, "a1")
    final = (await queue.get_document(parent_id)).model_copy(
        update={"answer": ANSWER, "category": "municipal_facility"}
    )
    await queue.submit(parent_id, "a1", final, FollowupDesk(queue).plan(final))
    return final


async def outbox(client: aioredis.Redis, queue: TicketQueue, channel: str) -> list[dict[str, Any]]:
    return [fields for _, fields in stream_entries(await client.xrange(queue.keys.outbox(channel)))]


async def assert_every_child_answered_once(
    client: aioredis.Redis, queue: TicketQueue, ids: list[str], contacts: list[Ticket]
) -> None:
    sms, wechat = await outbox(client, queue, "sms"), await outbox(client, queue, "wechat")
    for ticket_id, contact in zip(ids, contacts, strict=True):
        ticket = await queue.get(ticket_id)
        assert ticket.status == "submitted" and ticket.answer == ANSWER
        if ticket_id != ids[0]:
            assert lines(ticket, "answered_by_parent") == 1
            assert ticket.category == "municipal_facility"  # the 主单's, for the labels
        sent = [entry for entry in sms + wechat if entry["ticket"] == ticket_id]
        if contact.channel == "web":
            assert sent == [] and lines(ticket, "followup_not_sent") == 1  # a web form has no way back
            continue
        assert len(sent) == 1, ticket_id
        assert sent[0]["text"] == question(ANSWER)
        assert sent[0]["channel"] == ("wechat" if contact.channel == "wechat" else "sms")  # a call: by SMS
        assert lines(ticket, "followup_asked") == 1
    assert len(sms) + len(wechat) == sum(1 for contact in contacts if contact.channel != "web")


async def test_answering_the_parent_answers_every_child_on_its_own_channel(
    merge_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    contacts = [citizen_ticket(i, text) for i, text in enumerate(MANHOLE)]
    queue, consumer, ids = await triaged(merge_config, redis_client, contacts)
    await submit_parent(queue, ids[0])
    await consumer.ensure_group(queue.keys.submitted, LABELS_GROUP)
    while batch := await consumer.read_new(queue.keys.submitted, LABELS_GROUP):
        await consumer.on_submitted(batch)
    assert consumer.answered == 29
    await assert_every_child_answered_once(redis_client, queue, ids, contacts)
    assert (await redis_client.xpending(queue.keys.submitted, LABELS_GROUP))["pending"] == 0


class StopsAfter(TicketQueue):
    """A store whose process stops after answering `left` 子单."""

    left = 12

    async def answer_child(self, *args: Any, **kwargs: Any) -> bool:
        if self.left == 0:
            raise RuntimeError("the process stopped")
        self.left -= 1
        return await super().answer_child(*args, **kwargs)


async def test_a_consumer_stopped_half_way_another_answers_the_rest_each_once(
    merge_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    contacts = [citizen_ticket(i, text) for i, text in enumerate(MANHOLE)]
    queue, _, ids = await triaged(merge_config, redis_client, contacts)
    await submit_parent(queue, ids[0])
    triager = build_triager(merge_config)
    dying = Triage(queue.live, StopsAfter(redis_client, merge_config), triager, name="first")
    await dying.ensure_group(queue.keys.submitted, LABELS_GROUP)
    entries = await dying.read_new(queue.keys.submitted, LABELS_GROUP)
    with pytest.raises(RuntimeError):
        await dying.on_submitted(entries)
    assert dying.answered == 0 and len(await outbox(redis_client, queue, "sms")) > 1  # some went out

    second = Triage(queue.live, queue, triager, name="second")
    await second.claim_orphans(queue.keys.submitted, LABELS_GROUP, second.on_submitted)
    while batch := await second.read_new(queue.keys.submitted, LABELS_GROUP):
        await second.on_submitted(batch)  # the 子单 just answered, and a repeat of the 主单 finds none left
    assert second.answered == 29 - 12
    await assert_every_child_answered_once(redis_client, queue, ids, contacts)
    assert (await redis_client.xpending(queue.keys.submitted, LABELS_GROUP))["pending"] == 0


async def test_agents_confirm_or_split_a_suggested_merge(
    merge_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    contacts = [citizen_ticket(i, MANHOLE[i], "sms") for i in range(4)]
    queue, consumer, ids = await triaged(merge_config, redis_client, contacts)
    parent_id, kept, split, other = ids

    await queue.confirm_merge(kept, "a2")
    await queue.confirm_merge(kept, "a2")  # a repeat writes nothing
    confirmed = await queue.get(kept)
    assert confirmed.merge_confirmed and confirmed.parent == parent_id
    assert lines(confirmed, "merge_confirmed") == 1

    assert await queue.split(split, "a2") == parent_id
    alone = await queue.get(split)
    parent = await queue.get(parent_id)
    assert alone.parent == "" and lines(alone, "split") == 1 and alone.status == "queued"
    assert parent.children == (kept, other) and lines(parent, "child_split") == 1
    assert lines(parent, "merge_confirmed") == 1
    with pytest.raises(Conflict):
        await queue.split(split, "a2")  # no 子单 any more
    with pytest.raises(Conflict):
        await queue.confirm_merge(parent_id, "a2")  # a 主单 is no 子单

    await submit_parent(queue, parent_id)
    await consumer.ensure_group(queue.keys.submitted, LABELS_GROUP)
    while batch := await consumer.read_new(queue.keys.submitted, LABELS_GROUP):
        await consumer.on_submitted(batch)
    assert consumer.answered == 2
    assert (await queue.get(split)).status == "queued"  # split off: answered by its own agent
    assert (await queue.get(kept)).status == "submitted"
    with pytest.raises(Conflict):
        await queue.split(kept, "a2")  # answered: too late to split
