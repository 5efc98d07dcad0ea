"""HTTP intake -> Redis -> seat offer -> accept -> update -> submit -> `submitted` stream."""

from __future__ import annotations

import asyncio

from gateway.config import GatewayConfig
from gateway.ticket import Ticket
from tests.helpers import Seat, post_intake, running_gateway
from tests.redis_typed import stream_entries


async def test_intake_to_submitted(config: GatewayConfig) -> None:
    async with running_gateway(config) as (gateway, bound):
        seat = await Seat.connect(bound, "a1")
        status, body = await post_intake(
            bound,
            {
                "channel": "web",
                "citizen": {"phone": "138 1234 5678", "name": "陈先生"},
                "text": "小区路灯不亮",
            },
            headers={"Idempotency-Key": "form-0001"},
        )
        assert status == 202 and body["duplicate"] is False
        offer = await seat.expect("offer")
        assert offer["ticket"]["id"] == body["ticket_id"]
        assert offer["ticket"]["citizen"] == {"phone": "13812345678", "name": "陈先生"}
        await seat.send(type="accept", ticket=body["ticket_id"])
        claimed = await seat.expect("ticket")
        assert claimed["ticket"]["status"] == "claimed" and claimed["ticket"]["agent"] == "a1"
        await seat.send(
            type="update",
            ticket=body["ticket_id"],
            fields={"category": "市政设施", "address": "莱山区观海路"},
        )
        updated = await seat.expect("ticket")
        assert updated["ticket"]["category"] == "市政设施"
        await seat.send(type="submit", ticket=body["ticket_id"], fields={"notes": "已派单"})
        ack = await seat.expect("ack")
        while ack.get("status") != "submitted":
            ack = await seat.expect("ack")
        entries = stream_entries(await gateway.redis.xrange(gateway.queue.keys.submitted))
        assert len(entries) == 1
        ticket = Ticket.from_json(entries[0][1]["ticket"])
        assert ticket.id == body["ticket_id"] and ticket.status == "submitted"
        assert (ticket.category, ticket.address, ticket.notes) == ("市政设施", "莱山区观海路", "已派单")
        assert ticket.message_id == "form-0001"
        actions = [(h.actor, h.action) for h in ticket.history]
        assert actions == [
            ("client:webform", "queued"),
            ("system", "offered"),
            ("agent:a1", "claimed"),
            ("agent:a1", "updated"),
            ("agent:a1", "submitted"),
        ]
        await seat.close()


async def test_skills_route_offers_and_priority_jumps(config: GatewayConfig) -> None:
    async with running_gateway(config) as (_gateway, bound):
        general = await Seat.connect(bound, "a1")
        housing = await Seat.connect(bound, "a2")
        _, h = await post_intake(bound, {"text": "物业费争议", "queue": "housing"})
        _, g = await post_intake(bound, {"text": "噪音扰民"})
        assert (await housing.expect("offer"))["ticket"]["id"] == h["ticket_id"]
        assert (await general.expect("offer"))["ticket"]["id"] == g["ticket_id"]
        await general.nothing("offer")
        await general.close()
        await housing.close()


async def test_busy_agent_is_skipped_and_priority_first(config: GatewayConfig) -> None:
    async with running_gateway(config) as (_gateway, bound):
        boss = await Seat.connect(bound, "boss", state="busy")
        a1 = await Seat.connect(bound, "a1")
        _, first = await post_intake(bound, {"text": "普通诉求一"})
        assert (await a1.expect("offer"))["ticket"]["id"] == first["ticket_id"]
        await boss.nothing("offer", 0.3)
        _, normal = await post_intake(bound, {"text": "普通诉求二"})
        _, urgent = await post_intake(bound, {"text": "燃气泄漏", "flags": ["urgent"]})
        _, firm = await post_intake(bound, {"text": "企业开办咨询", "queue": "enterprise"})
        await asyncio.sleep(0.2)
        await boss.send(type="state", state="ready")
        order = []
        for _ in range(3):
            offer = await boss.expect("offer")
            order.append(offer["ticket"]["id"])
            await boss.send(type="accept", ticket=offer["ticket"]["id"])
            await boss.expect("ticket")
            await boss.send(type="submit", ticket=offer["ticket"]["id"])
        assert order == [firm["ticket_id"], urgent["ticket_id"], normal["ticket_id"]]
        await boss.close()
        await a1.close()
