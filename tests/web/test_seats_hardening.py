"""Seat hardening (issue #17): logins under a flood of idle sockets, hostile frames, honest errors."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from gateway.config import GatewayConfig
from gateway.shell.app import Bound
from peers.gateway_config import AGENT_TOKENS
from tests.conftest import ConfigFactory
from tests.helpers import Seat, post_intake, running_gateway, voice_ticket

PENDING_TOTAL = 12
PENDING_PER_ADDRESS = 4


SMALL_WAITING_ROOM = {"max_pending_logins": PENDING_TOTAL, "max_pending_logins_per_address": PENDING_PER_ADDRESS}


async def idle_socket(bound: Bound, address: str) -> ClientConnection:
    """A websocket that completes its handshake from `address` and then never says hello."""
    return await connect(f"ws://{bound.seats[0]}:{bound.seats[1]}", local_addr=(address, 0), open_timeout=5)


async def close_code(ws: ClientConnection) -> int:
    with pytest.raises(ConnectionClosed) as caught:
        await ws.recv()
    assert caught.value.rcvd is not None
    return caught.value.rcvd.code


async def still_open(ws: ClientConnection) -> bool:
    """A round trip on the socket itself: a close frame sent before it would arrive first."""
    try:
        await (await ws.ping())
    except ConnectionClosed:
        return False
    return True


async def test_idle_sockets_from_one_address_do_not_keep_an_agent_out(
    config_factory: ConfigFactory,
) -> None:
    # Before: idle sockets counted against max_connections, so the agent got 1013.
    config: GatewayConfig = config_factory(
        seats={"listen": "127.0.0.1:0", "auth_timeout": 30, "max_connections": 4, **SMALL_WAITING_ROOM}
    )
    async with running_gateway(config) as (_, bound):
        idle = [await idle_socket(bound, "127.0.0.1") for _ in range(PENDING_PER_ADDRESS + 3)]
        agent = await Seat.connect(bound, "a1")  # from the same address, and it gets in
        displaced = idle[:4]  # the three beyond the address's share, then room for the agent
        assert [await close_code(ws) for ws in displaced] == [4002] * 4
        assert all([await still_open(ws) for ws in idle[4:]])
        _, body = await post_intake(bound, {"text": "洪水中的登录"})
        assert (await agent.expect("offer"))["ticket"]["id"] == body["ticket_id"]
        for ws in idle[4:]:
            await ws.close()
        await agent.close()


async def test_idle_sockets_from_many_addresses_do_not_keep_an_agent_out(
    config_factory: ConfigFactory,
) -> None:
    config: GatewayConfig = config_factory(
        seats={"listen": "127.0.0.1:0", "auth_timeout": 30, "max_connections": 4, **SMALL_WAITING_ROOM}
    )
    async with running_gateway(config) as (_, bound):
        # Six addresses, three idle sockets each: 18 for a room of 12; no address exceeds its share.
        idle = [await idle_socket(bound, f"127.0.0.{host}") for host in range(2, 8) for _ in range(3)]
        agent = await Seat.connect(bound, "a1")
        overflow = len(idle) - PENDING_TOTAL
        displaced = idle[: overflow + 1]  # the oldest, whatever their address, and one for the agent
        assert [await close_code(ws) for ws in displaced] == [4002] * len(displaced)
        assert all([await still_open(ws) for ws in idle[len(displaced) :]])
        await agent.send(type="ping")
        assert (await agent.expect("pong"))["re"] is not None
        for ws in idle[len(displaced) :]:
            await ws.close()
        await agent.close()


async def test_only_logged_in_seats_count_against_the_seat_cap(config_factory: ConfigFactory) -> None:
    config: GatewayConfig = config_factory(seats={"listen": "127.0.0.1:0", "auth_timeout": 30, "max_connections": 2})
    async with running_gateway(config) as (_, bound):
        idle = [await idle_socket(bound, "127.0.0.1") for _ in range(10)]
        a1 = await Seat.connect(bound, "a1")
        a2 = await Seat.connect(bound, "a2")
        ws = await connect(f"ws://{bound.seats[0]}:{bound.seats[1]}")
        await ws.send(json.dumps({"type": "hello", "agent": "boss", "token": AGENT_TOKENS["boss"]}))
        assert await close_code(ws) == 1013
        # A full house still lets an agent log in again (the newer login replaces the older).
        again = await Seat.connect(bound, "a1")
        assert await close_code(a1.ws) == 4008
        assert all([await still_open(ws) for ws in idle])
        for ws in idle:
            await ws.close()
        await again.close()
        await a2.close()


def tracebacks(records: list[logging.LogRecord]) -> list[str]:
    return [f"{r.name}: {r.getMessage()}" for r in records if r.exc_info or r.levelno >= logging.ERROR]


async def test_deeply_nested_json_is_refused_without_a_traceback(
    config: GatewayConfig, caplog: pytest.LogCaptureFixture
) -> None:
    deep = "[" * 1000 + "]" * 1000
    async with running_gateway(config) as (_, bound):
        ws = await connect(f"ws://{bound.seats[0]}:{bound.seats[1]}")
        await ws.send(deep)
        assert await close_code(ws) == 4001  # before login: the authentication-failed close
        seat = await Seat.connect(bound, "a1")
        await seat.ws.send(deep)
        error = await seat.expect("error")
        assert error["code"] == "invalid_json" and "deeper" in error["message"]
        await seat.ws.send(json.dumps({"type": "ping", "id": 7, "x": json.loads("[" * 40 + "]" * 40)}))
        assert (await seat.expect("error"))["code"] == "invalid_json"
        await seat.send(type="ping")
        assert (await seat.expect("pong"))["type"] == "pong"  # the seat lives
        await seat.close()
    assert tracebacks(caplog.records) == []


async def test_the_frame_limit_counts_bytes(config_factory: ConfigFactory) -> None:
    config: GatewayConfig = config_factory(seats={"listen": "127.0.0.1:0", "max_frame_bytes": 1024})
    async with running_gateway(config) as (_, bound):
        seat = await Seat.connect(bound, "a1")
        # 400 characters, 1,200 bytes of UTF-8: over a 1,024-byte limit.
        await seat.send(type="decline", ticket="01ABC", reason="中" * 400)
        error = await seat.expect("error")
        assert error["code"] == "too_large" and "1024 bytes" in error["message"]
        await seat.close()


async def test_nothing_long_or_raw_is_echoed(config: GatewayConfig) -> None:
    async with running_gateway(config) as (_, bound):
        seat = await Seat.connect(bound, "a1")
        await seat.send(type="\x1b[2J" + "x" * 60_000)
        error = await seat.expect("error")
        assert error["code"] == "unknown_type"
        assert len(error["message"]) < 200 and "\x1b" not in error["message"]
        assert error["message"].startswith("unknown frame type '\\x1b[2Jxxx")
        await seat.send(type="state", state="ready", **{"\u202e" + "k" * 60_000: 1})
        error = await seat.expect("error")
        assert error["code"] == "invalid" and len(json.dumps(error, ensure_ascii=False)) < 400
        assert error["fields"][0]["path"].startswith("\\u202ekkk") and "\u202e" not in error["fields"][0]["path"]
        await seat.send(type="ping", id=["not", "an", "id"])
        assert (await seat.expect("error"))["re"] is None
        await seat.close()


async def claimed(bound: Bound, seat: Seat, text: str) -> str:
    _, body = await post_intake(bound, {"text": text, "citizen": {"phone": "13812345678"}})
    await seat.expect("offer")
    await seat.send(type="accept", ticket=body["ticket_id"])
    await seat.expect("ticket")
    assert (await seat.expect("ack"))["status"] == "claimed"
    return str(body["ticket_id"])


def assert_no_internals(raw: dict[str, Any]) -> None:
    text = json.dumps(raw, ensure_ascii=False)
    for leak in ("pydantic", "type=", "input_value", "input_type", "validation error", "Value error", "citizen.phone"):
        assert leak not in text, f"{leak!r} in {text}"


async def test_edit_errors_name_the_field_in_our_words(config: GatewayConfig) -> None:
    async with running_gateway(config) as (_, bound):
        seat = await Seat.connect(bound, "a1")
        ticket_id = await claimed(bound, seat, "错误信息不外泄")
        await seat.send(type="update", ticket=ticket_id, fields={"citizen_phone": "call me", "category": "c" * 200})
        error = await seat.expect("error")
        assert_no_internals(error)
        assert error["code"] == "invalid" and error["message"] == "cannot apply these edits"
        assert {f["path"]: f["message"] for f in error["fields"]} == {
            "fields.citizen_phone": "must be a phone number: optional +, then 3 to 20 digits",
            "fields.category": "String should have at most 128 characters",
        }
        await seat.send(type="submit", ticket=ticket_id, fields={"notes": ["not", "text"]})
        error = await seat.expect("error")
        assert_no_internals(error)
        assert [f["path"] for f in error["fields"]] == ["fields.notes"]
        await seat.send(type="update", ticket=ticket_id, fields={"x" * 5000: 1})
        error = await seat.expect("error")
        assert error["code"] == "invalid" and len(error["message"]) < 300
        # Nothing was applied: the ticket is still claimed, unedited, and can be submitted.
        await seat.send(type="submit", ticket=ticket_id)
        assert (await seat.expect("ack"))["status"] == "submitted"
        await seat.close()


async def test_a_ticket_that_does_not_exist_is_not_found(config: GatewayConfig) -> None:
    async with running_gateway(config) as (_, bound):
        seat = await Seat.connect(bound, "a1")
        for frame in (
            {"type": "accept", "ticket": "01NOSUCHTICKET"},
            {"type": "decline", "ticket": "01NOSUCHTICKET"},
            {"type": "submit", "ticket": "01NOSUCHTICKET"},
            {"type": "update", "ticket": "01NOSUCHTICKET", "fields": {"notes": "x"}},
            {"type": "reply", "ticket": "01NOSUCHTICKET", "text": "您好"},
        ):
            await seat.send(**frame)
            error = await seat.expect("error")
            assert (frame["type"], error["code"]) == (frame["type"], "not_found")
        # One that exists but is not this seat's is still a conflict.
        await seat.send(type="state", state="away")
        await seat.expect("ack")
        other = await Seat.connect(bound, "boss")
        _, body = await post_intake(bound, {"text": "别人的工单"})
        assert (await other.expect("offer"))["ticket"]["id"] == body["ticket_id"]
        for kind in ("accept", "submit"):
            await seat.send(type=kind, ticket=body["ticket_id"])
            assert (await seat.expect("error"))["code"] == "conflict"
        await other.close()
        await seat.close()


async def test_a_voice_offer_is_logged_with_the_caller_masked(
    config: GatewayConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.seats")
    async with running_gateway(config) as (gateway, bound):
        seat = await Seat.connect(bound, "a1")
        ticket = voice_ticket("call-77", called="12345")
        await gateway.queue.intake(ticket, "worker:w1")
        assert (await seat.expect("offer"))["ticket"]["id"] == ticket.id
        await seat.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.seats" and "voice ticket" in r.getMessage()]
    assert lines == [f"voice ticket {ticket.id} offered to seat a1 (caller 138****5678)"]
