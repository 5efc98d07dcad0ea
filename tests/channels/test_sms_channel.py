"""The SMS channel end to end, for both protocols: a faithful peer over real TCP, the gateway
in-process on a real Redis, an agent's seat over a real websocket."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from tests.channels.sms_stack import CITIZEN, LONG_CHINESE, PROTOCOLS, Protocol, bound, sms_gateway, the_sms_channel
from tests.helpers import Seat

pytestmark = pytest.mark.parametrize("protocol", PROTOCOLS)


async def test_an_sms_becomes_a_ticket_offered_to_a_seat_and_is_answered_after_the_write(
    protocol: Protocol, config_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sms_gateway(protocol, config_factory, monkeypatch) as (peer, _, bound_at):
        seat = await Seat.connect(bound_at, "a1")
        (delivery,) = await peer.deliver("幸福路的路灯坏了")
        offer = await seat.expect("offer")
        ticket = offer["ticket"]
        assert (ticket["channel"], ticket["text"]) == ("sms", "幸福路的路灯坏了")
        assert ticket["citizen"]["phone"] == CITIZEN  # the ticket holds the number; logs mask it
        assert [m["text"] for m in ticket["messages"]] == ["幸福路的路灯坏了"]
        assert await peer.server.results_of(delivery) == [0]
        await seat.close()


async def test_a_redelivered_sms_is_one_ticket(
    protocol: Protocol, config_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The peer gives up waiting for each answer at once and delivers again (the same message, the
    # same id or fingerprint): three deliveries of one SMS.
    async with sms_gateway(protocol, config_factory, monkeypatch, response_timeout=0.0, max_deliveries=3) as (
        peer,
        gateway,
        bound_at,
    ):
        await peer.deliver("垃圾没人收")
        await peer.answers(3)
        assert await gateway.redis.xlen(gateway.queue.keys.created) == 1
        seat = await Seat.connect(bound_at, "a1")
        assert (await seat.expect("offer"))["ticket"]["text"] == "垃圾没人收"
        await seat.nothing("offer")
        await seat.close()


async def test_a_long_chinese_sms_in_parts_out_of_order_is_one_ticket_with_the_whole_text(
    protocol: Protocol, config_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sms_gateway(protocol, config_factory, monkeypatch) as (peer, gateway, bound_at):
        seat = await Seat.connect(bound_at, "a1")
        deliveries = await peer.deliver(LONG_CHINESE, order=[3, 1, 2])
        assert len(deliveries) == 3
        ticket = (await seat.expect("offer"))["ticket"]
        assert ticket["text"] == LONG_CHINESE and "flags" not in ticket
        for delivery in deliveries:
            assert await peer.server.results_of(delivery) == [0]
        assert await gateway.redis.xlen(gateway.queue.keys.created) == 1
        await seat.close()


async def test_a_refused_login_makes_the_gateway_unready_naming_the_sms_service(
    protocol: Protocol, config_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sms_gateway(protocol, config_factory, monkeypatch, "wrongpw1") as (_, gateway, bound_at):
        link = the_sms_channel(gateway).link
        while link.health().state != "auth_failed":
            await link.changed()
        url = f"http://{bound_at.http[0]}:{bound_at.http[1]}/readyz"
        async with aiohttp.ClientSession() as http, http.get(url) as response:
            assert response.status == 503
            body = await response.json()
        assert body["services"]["sms"]["state"] == "failed"
        assert body["services"]["sms"]["detail"].startswith("auth_failed")
        assert body["services"]["seats"]["state"] == "up"


async def test_a_bound_link_makes_the_sms_service_ready(
    protocol: Protocol, config_factory: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with sms_gateway(protocol, config_factory, monkeypatch) as (_, gateway, _):
        await bound(gateway)
        report = gateway.report()
        assert report.services["sms"].state == "up" and report.ready
