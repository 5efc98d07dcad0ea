"""The triage consumer against a real Redis: tickets posted through HTTP get their suggestions
beside intake; a consumer stopped between its amend and its acknowledgement, or cancelled anywhere
mid-stream, leaves work that another consumer finishes, and no ticket is triaged twice."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.config import GatewayConfig, LiveConfig
from gateway.errors import ConfigError
from gateway.messages import Alerted, TriageNews
from gateway.queue import TicketQueue
from gateway.shell.app import Gateway
from gateway.shell.tasks import stop_task
from gateway.ticket import ConversationMessage, Ticket, TranscriptSegment, utcnow
from gateway.triage.assess import ACTION, ACTOR, Triager, assess, ticket_text
from gateway.triage.service import (
    GROUP,
    LABELS_GROUP,
    Triage,
    build_triager,
)
from tests.conftest import ConfigFactory
from tests.helpers import Seat, post_intake, queued_ticket, running_gateway
from tests.redis_typed import stream_entries
from tests.triage.conftest import SHIPPED_SENSITIVE

CONTACTS = [
    ("我家燃气报警器一直响，屋里一股煤气味", "gas_leak"),
    ("楼下饭店油烟直接排到我家窗户", "pollution"),
    ("包工头拖欠我们农民工工资半年了", "wage_arrears"),
    ("孩子明年上小学，我们小区划片到哪个学校", "education"),
    ("暖气一点都不热，室温才十四度", "heating"),
]


@pytest.fixture
def triage_config(config_factory: ConfigFactory, catalogue_path: Path) -> GatewayConfig:
    return config_factory(
        triage={"enabled": True, "catalogue": str(catalogue_path), "batch": 5, "claim_idle": 0},
        sensitive=SHIPPED_SENSITIVE,
    )


def triage_lines(ticket: Ticket) -> int:
    return sum(1 for entry in ticket.history if entry.actor == ACTOR and entry.action == ACTION)


async def intake(queue: TicketQueue, count: int) -> list[str]:
    ids = []
    for i in range(count):
        ticket = queued_ticket(f"m{i}", text=CONTACTS[i % len(CONTACTS)][0])
        ids.append((await queue.intake(ticket, "test")).ticket_id)
    return ids


async def tickets(config: GatewayConfig, client: aioredis.Redis, count: int) -> tuple[TicketQueue, Triager, list[str]]:
    """A queue with `count` new tickets on its ticket-created stream, and what triage decides with."""
    queue = TicketQueue(client, config)
    return queue, build_triager(config), await intake(queue, count)


async def test_tickets_posted_through_http_get_suggestions(triage_config: GatewayConfig) -> None:
    async with running_gateway(triage_config) as (gateway, bound):
        assert gateway.triage is not None
        assert "triage" in gateway.report().services
        ids = []
        for text, _ in CONTACTS:
            status, body = await post_intake(bound, {"text": text})
            assert status == 202, body
            ids.append(body["ticket_id"])
        async with asyncio.timeout(10):
            await gateway.triage.handled_at_least(len(CONTACTS))
        for ticket_id, (_, category) in zip(ids, CONTACTS, strict=True):
            ticket = await gateway.queue.get(ticket_id)
            assert len(ticket.suggestions) == 3
            assert ticket.suggestions[0].category == category
            assert ticket.suggestions[0].evidence
            assert triage_lines(ticket) == 1
            assert ticket.status == "queued"  # triage changes the document, never the ticket's place


async def test_a_consumer_stopped_between_amend_and_ack_leaves_work_another_finishes_once(
    triage_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    queue, model, ids = await tickets(triage_config, redis_client, 12)
    first = Triage(queue.live, queue, model, name="first")
    await first.ensure_group()
    entries = await first.read_new()
    assert len(entries) == 5  # one batch
    for _, fields in entries:
        await first.triage(fields["t"])  # amended ... and the consumer dies before its XACK
    assert first.triaged == 5 and first.handled == 0

    second = Triage(queue.live, queue, model, name="second")
    assert await second.claim_orphans() == 5
    assert second.repeats == 5 and second.triaged == 0  # found done: nothing written again
    while len(batch := await second.read_new()) > 0:
        await second.handle(batch)
    assert second.triaged == 7 and second.handled == 12
    assert (await redis_client.xpending(queue.keys.created, GROUP))["pending"] == 0
    for ticket_id in ids:
        ticket = await queue.get(ticket_id)
        assert triage_lines(ticket) == 1
        assert len(ticket.suggestions) == 3


class DiesBeforeItsThirdAck(Triage):
    """A consumer whose task is cancelled in its third batch, after the amends, before the XACK:
    where a crash would hurt most."""

    async def acknowledge(self, entry_ids: list[str]) -> None:
        if self.handled == 10:
            task = asyncio.current_task()
            assert task is not None
            task.cancel()
            await asyncio.sleep(0)  # the cancellation lands here
        await super().acknowledge(entry_ids)


async def test_a_consumer_cancelled_mid_stream_every_ticket_triaged_once(
    triage_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    queue, model, ids = await tickets(triage_config, redis_client, 40)
    first = DiesBeforeItsThirdAck(queue.live, queue, model, name="first")
    dying = asyncio.create_task(first.run())
    with pytest.raises(asyncio.CancelledError):
        async with asyncio.timeout(10):
            await dying
    assert (first.handled, first.triaged) == (10, 15)  # two batches acknowledged, a third amended only

    second = Triage(queue.live, queue, model, name="second")
    running = asyncio.create_task(second.run())
    try:
        async with asyncio.timeout(10):
            await second.handled_at_least(len(ids) - first.handled)
    finally:
        await stop_task(running)
    assert second.repeats == 5  # the third batch, claimed: found triaged, acknowledged
    assert first.triaged + second.triaged == len(ids)  # every amend that was written, written once
    assert (await redis_client.xpending(queue.keys.created, GROUP))["pending"] == 0
    for ticket_id in ids:
        assert triage_lines(await queue.get(ticket_id)) == 1


async def test_a_repeated_triage_writes_nothing_twice(
    triage_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    queue, model, [ticket_id] = await tickets(triage_config, redis_client, 1)
    consumer = Triage(queue.live, queue, model, name="only")
    await consumer.triage(ticket_id)
    once = await queue.get(ticket_id)
    await consumer.triage(ticket_id)
    assert await queue.get(ticket_id) == once
    assert (consumer.triaged, consumer.repeats) == (1, 1)


async def test_a_ticket_gone_is_acknowledged_and_skipped(
    triage_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    queue, model, [ticket_id] = await tickets(triage_config, redis_client, 1)
    consumer = Triage(queue.live, queue, model, name="only")
    await redis_client.delete(queue.keys.ticket(ticket_id))
    await consumer.ensure_group()
    await consumer.handle(await consumer.read_new())
    assert (consumer.handled, consumer.triaged) == (1, 0)


def test_the_text_read_is_the_tickets_and_what_the_caller_said(triage_config: GatewayConfig) -> None:
    said = (
        TranscriptSegment(speaker="caller", text="我们楼停水两天了", start=0, end=2, confidence=0.9),
        TranscriptSegment(speaker="agent", text="您好请讲", start=2, end=3, confidence=0.9),
    )
    ticket = queued_ticket("v1", channel="voice", transcript=said)
    assert ticket_text(ticket) == "我们楼停水两天了"
    suggested = assess(ticket, build_triager(triage_config), utcnow())
    assert suggested.suggestions[0].category == "water_outage"
    assert suggested.history == ticket.history  # the history line is the amend's, in the same write


def test_triage_enabled_needs_a_catalogue_that_exists(config_factory: ConfigFactory, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="catalogue: required when triage is enabled"):
        config_factory(triage={"enabled": True})
    config = config_factory(triage={"enabled": True, "catalogue": "nowhere.toml"})
    with pytest.raises(ConfigError, match=r"nowhere\.toml"):
        Gateway(config, aioredis.Redis())


async def test_agents_final_categories_are_recorded_once_as_labelled_contacts(
    triage_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    queue, model, _ = await tickets(triage_config, redis_client, 0)
    keys = queue.keys
    submitted = [
        queued_ticket("s1", text="暖气片不热", status="submitted", category="heating"),
        queued_ticket("s2", text="咨询一下", status="submitted"),  # no category chosen: nothing learnt
        queued_ticket("s3", text="别的", status="submitted", category="not_in_the_catalogue"),
        queued_ticket("s4", channel="voice", status="submitted", category="water_outage"),  # nothing said
    ]
    for ticket in submitted:
        await redis_client.xadd(keys.submitted, {"ticket": ticket.to_json()})
    first = Triage(queue.live, queue, model, name="first")
    await first.ensure_group(keys.submitted, LABELS_GROUP)
    assert len(await first.read_new(keys.submitted, LABELS_GROUP)) == 4  # ... and it dies unacknowledged

    second = Triage(queue.live, queue, model, name="second")
    running = asyncio.create_task(second.learn())
    try:
        async with asyncio.timeout(10):
            await second.handled_at_least(4)  # claimed from the first
    finally:
        await stop_task(running)
    labels = stream_entries(await redis_client.xrange(keys.triage_labels))
    assert [fields for _, fields in labels] == [
        {"t": submitted[0].id, "category": "heating", "text": "暖气片不热", "suggested": ""}
    ]
    assert second.labelled == 1
    assert (await redis_client.xpending(keys.submitted, LABELS_GROUP))["pending"] == 0


async def test_a_threat_is_raised_ahead_of_older_tickets_and_alerted_once(
    triage_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    queue, triager, [older] = await tickets(triage_config, redis_client, 1)
    threat = (await queue.intake(queued_ticket("t1", text="工资再不给我就跳楼"), "test")).ticket_id
    pubsub = redis_client.pubsub()
    await pubsub.subscribe(queue.keys.triage_news)
    consumer = Triage(queue.live, queue, triager, name="only")
    await consumer.triage(older)
    await consumer.triage(threat)
    await consumer.triage(threat)  # a repeat after a crash: nothing written twice
    raised = await queue.get(threat)
    assert raised.priority == 9 and "sensitive_critical" in raised.flags
    resolve = raised.clocks[-1]
    yellow_at = raised.received_at + (resolve.due - raised.received_at) * triage_config.deadlines.yellow_share
    score = await redis_client.zscore(queue.keys.clocks, threat)
    assert score == int(yellow_at.timestamp() * 1000), "on the red/yellow list from when it turns yellow"
    assert await queue.waiting("general") == 2, "the ticket moved: it is not queued twice"
    offered = await queue.offer("a1", ["general"])
    assert offered is not None and offered.id == threat, "the threat is offered before the older ticket"
    entries = stream_entries(await redis_client.xrange(queue.keys.alerts))
    assert [Alerted.parse(fields["m"]).ticket for _, fields in entries] == [threat]
    said: list[TriageNews] = []
    while len(said) < 2:  # the older ticket's news, then the threat's (the repeat says nothing)
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5.0)
        if message is not None:
            said.append(TriageNews.parse(message["data"]))
    assert [(news.ticket, news.kind) for news in said] == [(older, "triaged"), (threat, "triaged")]
    alerted = said[1]
    assert (alerted.priority, [a.word for a in alerted.alerts]) == (9, ["跳楼"])
    assert alerted.suggestions and alerted.clocks and "sensitive_critical" in alerted.flags
    await pubsub.aclose()  # type: ignore[no-untyped-call]


async def test_the_seat_holding_a_ticket_is_alerted_as_triage_finds_a_threat(
    config_factory: ConfigFactory, catalogue_path: Path, redis_client: aioredis.Redis
) -> None:
    # The gateway serves the seat; triage runs beside it (another process would do the same),
    # after the agent took the ticket: the alert reaches the seat that holds it.
    config = config_factory(sensitive=SHIPPED_SENSITIVE)
    async with running_gateway(config) as (gateway, bound):
        seat = await Seat.connect(bound, "a1")
        status, body = await post_intake(bound, {"text": "物业欺负人，逼急了我就去跳楼"})
        assert status == 202, body
        offer = await seat.expect("offer")
        assert offer["ticket"]["id"] == body["ticket_id"] and "alerts" not in offer["ticket"]
        triage_config = config.model_copy(
            update={"triage": config.triage.model_copy(update={"catalogue": str(catalogue_path)})}
        )
        consumer = Triage(LiveConfig(triage_config), gateway.queue, build_triager(triage_config), name="beside")
        await consumer.triage(body["ticket_id"])
        triaged = await seat.expect("triaged")
        assert triaged["ticket"] == body["ticket_id"] and triaged["priority"] == 9
        assert len(triaged["suggestions"]) == 3 and triaged["clocks"][0]["name"] == "resolve"
        alert = await seat.expect("alert")
        assert (alert["ticket"], alert["priority"]) == (body["ticket_id"], 9)
        assert [(a["word"], a["severity"], a["source"]) for a in alert["alerts"]] == [("跳楼", 3, "text")]
        await seat.close()


async def test_a_threat_said_while_the_call_is_up_alerts_the_seat_and_pages_once(
    config_factory: ConfigFactory, catalogue_path: Path
) -> None:
    # The worker writes each final caller segment into the ticket with an `hg:said` entry in the
    # same transaction; triage's `triage-said` consumers scan it: two at once still alert once.
    paging = {"enabled": True, "phones": ["13900001111"]}
    sms = {"enabled": True, "smsc": "127.0.0.1:1", "system_id": "hotline", "source_addr": "12345"}
    config = config_factory(
        triage={"enabled": True, "catalogue": str(catalogue_path), "paging": paging, "claim_idle": 0},
        sensitive=SHIPPED_SENSITIVE,
        channels={"sms": sms},
    )
    async with running_gateway(config) as (gateway, bound):
        seat = await Seat.connect(bound, "a1")
        queue = gateway.queue
        call = queued_ticket("call-live-threat", channel="voice", text="小区停水两天了")
        await queue.intake(call, "worker:w1")
        offer = await seat.expect("offer")
        await seat.send(type="accept", ticket=offer["ticket"]["id"])
        await seat.expect("ticket")
        assert (await seat.expect("triaged"))["priority"] == 0  # the core's triage, as the call came in
        segment = TranscriptSegment(text="再不来修我就跳楼", start=12, end=14, confidence=0.8)
        await queue.amend(call.id, lambda t: t.model_copy(update={"transcript": (segment,)}), "worker:w1",
                          "transcript", queue.tell_said)  # fmt: skip
        alert = await seat.expect("alert")
        assert [(a["word"], a["source"]) for a in alert["alerts"]] == [("跳楼", "transcript")]
        assert alert["priority"] == 9 and alert["seq"], "journaled: a seat that drops sees it on return"
        others = [Triage(queue.live, queue, build_triager(config), name=f"said-{n}") for n in range(2)]
        assert not any(await asyncio.gather(*(other.reassess(call.id) for other in others))), "found once"
        ticket = await queue.get(call.id)
        assert [entry.action for entry in ticket.history].count("reassessed") == 1
        assert [a.word for a in ticket.alerts] == ["跳楼"] and ticket.priority == 9
        alerted = [Alerted.parse(f["m"]) for _, f in stream_entries(await queue.redis.xrange(queue.keys.alerts))]
        assert [(a.ticket, [x.word for x in a.alerts]) for a in alerted] == [(call.id, ["跳楼"])]
        pages = stream_entries(await queue.redis.xrange(queue.keys.outbox("sms")))
        assert [(f["kind"], f["ticket"]) for _, f in pages] == [("page", call.id)]
        await seat.close()


async def test_a_citizens_follow_up_message_is_said_for_triage_to_scan(
    triage_config: GatewayConfig, redis_client: aioredis.Redis
) -> None:
    queue, _, [ticket_id] = await tickets(triage_config, redis_client, 1)
    sms = queued_ticket("s-follow", channel="sms", text="路灯不亮", citizen={"phone": "13812345678"})
    await queue.intake(sms, "sms:test")
    said = ConversationMessage(direction="in", id="s-follow-2", at=utcnow(), text="再不修我就跳楼")
    assert (await queue.join("sms", "13812345678", said, [said.id], "sms:test")).outcome == "joined"
    entries = stream_entries(await redis_client.xrange(queue.keys.said))
    assert [(f["t"], f["s"]) for _, f in entries] == [(sms.id, "message")]
    assert ticket_id != sms.id


async def test_a_waiting_ticket_triage_finds_on_the_enterprise_line_moves_to_its_queue(
    config_factory: ConfigFactory, catalogue_path: Path, redis_client: aioredis.Redis
) -> None:
    routing = {"default_queue": "general", "flag_queue": {"enterprise": "enterprise"}}
    config = config_factory(triage={"enabled": True, "catalogue": str(catalogue_path)}, routing=routing)
    queue = TicketQueue(redis_client, config)
    await queue.ensure_groups()
    arrears = queued_ticket("e1", text="区里的国企拖欠我们公司工程款两年了，应收账款收不回来")
    company = (await queue.intake(arrears, "test")).ticket_id
    citizen = (await queue.intake(queued_ticket("e2", text="暖气不热"), "test")).ticket_id
    consumer = Triage(queue.live, queue, build_triager(config), name="only")
    for ticket_id in (company, citizen):
        await consumer.triage(ticket_id)
    moved, stayed = await queue.get(company), await queue.get(citizen)
    assert moved.category == "" and moved.suggestions[0].category == "enterprise_arrears"
    assert (moved.queue, moved.priority, "enterprise" in moved.flags) == ("enterprise", 7, True)
    assert [clock.name for clock in moved.clocks] == ["contact", "reply", "resolve"]  # 2110
    assert stayed.queue == "general"
    assert (await queue.waiting("enterprise"), await queue.waiting("general")) == (1, 1), "moved, not copied"
    assert await queue.offer("a1", ["general"]) is not None and await queue.offer("a1", ["general"]) is None
    offered = await queue.offer("boss", ["enterprise"])
    assert offered is not None and offered.id == company, "the line's own skill takes it"
