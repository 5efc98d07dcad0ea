"""话后处理 (after-call work) with a per-queue time limit: the seat goes back to the state it had
before once the limit of the queue it last handled runs out; a state chosen meanwhile stands."""

from __future__ import annotations

from typing import Any

from gateway.config import GatewayConfig, parse_config
from gateway.web.seats import wrap_up_limit
from peers.gateway_config import make_raw_config
from tests.conftest import ConfigFactory
from tests.helpers import Seat, post_intake, running_gateway


def limits(general: float, housing: float) -> dict[str, Any]:
    raw = make_raw_config("x", "redis://127.0.0.1:1/0")
    for queue, limit in zip(raw["queues"][:2], (general, housing), strict=True):
        queue["wrap_up_limit"] = limit
    return {"queues": raw["queues"]}


def test_the_limit_is_the_last_queues_else_the_longest_of_the_seats(tmp_path: Any) -> None:
    config = parse_config(make_raw_config("x", "redis://127.0.0.1:1/0", **limits(30, 90)), tmp_path)
    assert wrap_up_limit(config, ["general", "housing"], "general") == 30
    assert wrap_up_limit(config, ["general", "housing"], "") == 90
    assert wrap_up_limit(config, ["enterprise"], "") == 120  # the default
    no_limit = parse_config(make_raw_config("x", "redis://127.0.0.1:1/0", **limits(0, 90)), tmp_path)
    assert wrap_up_limit(no_limit, ["general", "housing"], "") == 0, "one queue without a limit: none"
    assert wrap_up_limit(no_limit, ["general"], "housing") == 90


async def test_after_call_work_ends_by_the_limit_of_the_queue_just_handled(config_factory: ConfigFactory) -> None:
    config: GatewayConfig = config_factory(**limits(0.3, 60))
    async with running_gateway(config) as (_gateway, bound):
        seat = await Seat.connect(bound, "a1", state="busy")
        await seat.send(type="state", state="ready")
        await seat.expect("ack")
        status, body = await post_intake(bound, {"text": "路灯不亮"})
        assert status == 202, body
        ticket = (await seat.expect("offer"))["ticket"]["id"]
        await seat.send(type="accept", ticket=ticket)
        await seat.expect("ack")
        await seat.send(type="submit", ticket=ticket)
        assert (await seat.expect("ack"))["status"] == "submitted"
        await seat.send(type="state", state="wrap_up")
        assert (await seat.expect("ack"))["state"] == "wrap_up"
        back = await seat.expect("state", timeout=5)
        assert (back["state"], back["reason"]) == ("ready", "wrap_up_ended"), "ready, as before the wrap-up"

        # A state chosen before the limit stands: no frame comes to undo it.
        await seat.send(type="state", state="busy")
        await seat.expect("ack")
        await seat.send(type="state", state="wrap_up")
        await seat.expect("ack")
        await seat.send(type="state", state="away")
        await seat.expect("ack")
        await seat.nothing("state", wait=0.6)
        await seat.close()
