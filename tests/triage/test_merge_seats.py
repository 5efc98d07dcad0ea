"""主单 + 子单 at the seat: triage's decision reaches the seat holding a ticket (`triaged` frame with
its 主单); the agent holding a 子单 confirms or splits it; a 子单 answered with its 主单 is taken
from the seat that held it (`revoked`, answered_by_parent)."""

from __future__ import annotations

from pathlib import Path

from gateway.config import GatewayConfig, LiveConfig
from gateway.triage.service import Triage, build_triager
from tests.conftest import ConfigFactory
from tests.helpers import Seat, running_gateway
from tests.triage.merge_contacts import MANHOLE
from tests.triage.test_merge_service import MERGE, citizen_ticket


async def test_the_seat_sees_the_link_splits_it_and_loses_an_answered_child(
    config_factory: ConfigFactory, catalogue_path: Path
) -> None:
    triage = {"enabled": True, "catalogue": str(catalogue_path), "merge": MERGE}
    config: GatewayConfig = config_factory(triage=triage)
    serving = config.model_copy(update={"triage": config.triage.model_copy(update={"enabled": False})})
    async with running_gateway(serving) as (gateway, bound):
        queue = gateway.queue
        consumer = Triage(LiveConfig(config), queue, build_triager(config), name="beside")
        contacts = [citizen_ticket(n, MANHOLE[n], "web") for n in range(3)]
        ids = [(await queue.intake(ticket, "test")).ticket_id for ticket in contacts]
        for ticket_id in ids:  # the first becomes the 主单, the next two its 子单
            await consumer.triage(ticket_id)
        parent, child, other = ids
        assert (await queue.get(child)).parent == parent and (await queue.get(other)).parent == parent

        seat = await Seat.connect(bound, "a1")
        assert (await seat.expect("offer"))["ticket"]["id"] == parent  # the oldest first
        await seat.send(type="accept", ticket=parent)
        await seat.expect("ack")
        sent = await seat.send(type="split", ticket=other)  # the 主单's holder may split its 子单
        assert (await seat.expect("ack"))["re"] == sent
        assert (await queue.get(other)).parent == ""
        await seat.send(type="split", ticket=other)  # no 子单 any more
        assert (await seat.expect("error"))["code"] == "conflict"
        await seat.send(type="confirm_merge", ticket=child)
        assert (await seat.expect("ack"))["status"] == "merge_confirmed"

        # The 主单 answered: its 子单, offered to a second seat meanwhile (the oldest waiting), is
        # taken from it; the split one stays.
        boss = await Seat.connect(bound, "boss")
        assert (await boss.expect("offer"))["ticket"]["id"] == child
        answer = "您反映的井盖已由市政部门更换，感谢您的监督。"
        await seat.send(type="submit", ticket=parent, fields={"answer": answer})
        assert (await seat.expect("ack"))["status"] == "submitted"
        learned = Triage(LiveConfig(config), queue, build_triager(config), name="learner")
        await learned.ensure_group(queue.keys.submitted, "triage-labels")
        await learned.on_submitted(await learned.read_new(queue.keys.submitted, "triage-labels"))
        stored = await queue.get(child)
        assert (stored.status, stored.answer) == ("submitted", answer)
        split_off = await queue.get(other)
        assert (split_off.status, split_off.answer) in {("queued", ""), ("offered", "")}, "split: its own agent answers"
        revoked = await boss.expect("revoked")
        assert (revoked["ticket"], revoked["reason"]) == (child, "answered_by_parent")
        await seat.close()
        await boss.close()
