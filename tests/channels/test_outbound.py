"""Outbound, for both protocols: an agent's reply reaches the citizen's handset through the peer,
once, and every state of it reaches the ticket and the seat; a full outbox refuses replies."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from gateway.channels.contract import ChannelIntake, InboundMessage
from gateway.channels.outbound import retry_delay
from gateway.ticket import utcnow
from tests.channels.sms_stack import CITIZEN, LONG_CHINESE, SmsDesk, claimed_sms_ticket
from tests.helpers import Seat, running_gateway

UCS2 = 8  # data_coding (SMPP) and Msg_Fmt (CMPP) alike
LONG_REPLY = LONG_CHINESE[:150]  # three UCS-2 parts of at most 67 characters


async def outbox_ack(seat: Seat) -> str:
    """The reply's id, from its ack (the accept's ack comes first)."""
    while "outbox" not in (frame := await seat.expect("ack")):
        pass
    return str(frame["outbox"])


async def delivery(seat: Seat, status: str) -> dict[str, Any]:
    frame = await seat.expect("delivery", timeout=10)
    assert frame["status"] == status, frame
    return frame


async def test_a_reply_reaches_the_citizen_in_parts_and_its_receipts_make_it_delivered(desk: SmsDesk) -> None:
    peer, gateway, seat = desk.peer, desk.gateway, desk.seat
    ticket_id = await claimed_sms_ticket(peer, seat)
    await seat.send(type="reply", ticket=ticket_id, text=LONG_REPLY)
    reply_id = await outbox_ack(seat)
    assert (await delivery(seat, "sent"))["reply"] == reply_id
    ((text, part_ids, codings),) = await peer.sent_to(CITIZEN)
    assert text == LONG_REPLY and codings == (UCS2,) * 3
    for part_id in part_ids[:2]:
        peer.receipt(part_id)
    await seat.nothing("delivery", 0.3)  # a part is still on its way
    peer.receipt(part_ids[2])
    assert (await delivery(seat, "delivered"))["reply"] == reply_id
    ticket = await gateway.queue.get(ticket_id)
    actions = [(entry.action, entry.detail.get("reply")) for entry in ticket.history]
    assert actions[-3:] == [("replied", None), ("sent", reply_id), ("delivered", reply_id)]
    out = [m for m in ticket.messages if m.direction == "out"]
    assert [(m.id, m.text, m.status) for m in out] == [(reply_id, LONG_REPLY, "delivered")]
    assert await gateway.redis.xlen(gateway.queue.keys.outbox("sms")) == 0


async def test_a_failed_receipt_makes_the_reply_failed_with_the_peers_reason(desk: SmsDesk) -> None:
    peer, gateway, seat = desk.peer, desk.gateway, desk.seat
    ticket_id = await claimed_sms_ticket(peer, seat)
    await seat.send(type="reply", ticket=ticket_id, text="已转市政部门")
    await delivery(seat, "sent")
    ((_, (part_id,), _),) = await peer.sent_to(CITIZEN)
    peer.receipt(part_id, "UNDELIV")
    assert (await delivery(seat, "failed"))["reason"].startswith("failed")
    (out,) = [m for m in (await gateway.queue.get(ticket_id)).messages if m.direction == "out"]
    assert out.status == "failed" and out.reason.startswith("failed")


async def test_a_reply_pending_while_the_peer_is_down_is_sent_once_it_is_back(desk: SmsDesk) -> None:
    peer, gateway, seat = desk.peer, desk.gateway, desk.seat
    ticket_id = await claimed_sms_ticket(peer, seat)
    link = gateway.sms.link if gateway.sms else None
    assert link is not None
    await peer.server.close()
    while link.health().state == "bound":
        await link.changed()
    await seat.send(type="reply", ticket=ticket_id, text="师傅明天上午到")
    assert await outbox_ack(seat)
    await peer.restart()
    await delivery(seat, "sent")
    assert [text for text, _, _ in await peer.sent_to(CITIZEN)] == ["师傅明天上午到"]
    assert len(peer.server.messages) == 1  # once


async def test_a_full_outbox_refuses_the_reply_and_keeps_what_it_holds(config_factory: Any) -> None:
    # No SMS link here: nothing drains the outbox.
    async with running_gateway(config_factory(redis={"outbox_maxlen": 1})) as (gateway, bound_at):
        intake = ChannelIntake(gateway.desk, gateway.queue, gateway.live, 600.0)
        taken = await intake.take(InboundMessage("sms", CITIZEN, "路灯坏了", "m-1", utcnow()))
        seat = await Seat.connect(bound_at, "a1")
        await seat.expect("offer")
        await seat.send(type="accept", ticket=taken.ticket_id)
        await seat.expect("ticket")
        await seat.send(type="reply", ticket=taken.ticket_id, text="第一条回复")
        first = await outbox_ack(seat)
        await seat.send(type="reply", ticket=taken.ticket_id, text="第二条回复")
        error = await seat.expect("error")
        assert error["code"] == "unavailable" and "outbox is full" in error["message"]
        entries = await gateway.redis.xrange(gateway.queue.keys.outbox("sms"))
        assert [entry_id.decode() for entry_id, _ in entries] == [first]
        ticket = await gateway.queue.get(taken.ticket_id)
        assert [m.text for m in ticket.messages if m.direction == "out"] == ["第一条回复"]
        await seat.close()


def test_the_retry_delay_doubles_up_to_its_ceiling() -> None:
    assert [retry_delay(attempt, 1.0, 10.0) for attempt in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert timedelta(seconds=retry_delay(1, 0.5, 60)) == timedelta(seconds=0.5)
