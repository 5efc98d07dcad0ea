"""Bad input gets its clear error, and nothing already accepted is lost."""

from __future__ import annotations

import json

import aiohttp
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.config import GatewayConfig
from gateway.shell.app import Bound
from tests.conftest import ConfigFactory
from tests.helpers import Seat, post_intake, running_gateway


async def test_http_errors_are_clear_and_lose_nothing(config_factory: ConfigFactory) -> None:
    config: GatewayConfig = config_factory(http={"listen": "127.0.0.1:0", "max_body_bytes": 2048})
    async with running_gateway(config) as (gateway, bound):
        status, good = await post_intake(bound, {"text": "先收下的诉求"})
        assert status == 202

        status, body = await post_intake(bound, b"{not json")
        assert status == 400 and body["error"]["code"] == "invalid"

        status, body = await post_intake(bound, {"text": "", "citizen": {"phone": "call me"}, "colour": 1})
        assert status == 400
        paths = {f["path"] for f in body["error"]["fields"]}
        assert paths == {"text", "citizen.phone", "colour"}

        status, body = await post_intake(bound, {"text": "x"}, key="wrong-key")
        assert status == 401 and body["error"]["code"] == "unauthorized"

        status, body = await post_intake(bound, {"text": "长" * 3000})
        assert status == 413 and body["error"]["code"] == "too_large"

        status, body = await post_intake(bound, {"text": "x", "channel": "sms"})
        assert status == 403, "this client may only post web and wechat tickets"

        status, body = await post_intake(bound, {"text": "x", "queue": "nope"})
        assert status == 400 and body["error"]["fields"][0]["path"] == "queue"

        assert await gateway.queue.waiting("general") == 1
        assert (await gateway.queue.get(good["ticket_id"])).text == "先收下的诉求"


async def test_idempotency_key_gives_the_same_ticket(config: GatewayConfig) -> None:
    async with running_gateway(config) as (gateway, bound):
        headers = {"Idempotency-Key": "wx-msg-77"}
        first = await post_intake(bound, {"text": "重复提交"}, headers=headers)
        second = await post_intake(bound, {"text": "重复提交"}, headers=headers)
        assert first[0] == second[0] == 202
        assert first[1]["ticket_id"] == second[1]["ticket_id"]
        assert second[1]["duplicate"] is True
        body_id = await post_intake(bound, {"text": "同一消息", "channel": "wechat", "message_id": "wx-1"})
        again = await post_intake(bound, {"text": "同一消息", "channel": "wechat", "message_id": "wx-1"})
        assert body_id[1]["ticket_id"] == again[1]["ticket_id"]
        assert await gateway.queue.waiting("general") == 2


async def test_health_and_readiness(config: GatewayConfig) -> None:
    async with running_gateway(config) as (_, bound), aiohttp.ClientSession() as http:
        base = f"http://{bound.http[0]}:{bound.http[1]}"
        async with http.get(f"{base}/healthz") as response:
            assert response.status == 200
        async with http.get(f"{base}/readyz") as response:
            assert response.status == 200 and (await response.json())["redis"] == "ok"
        async with http.get(f"{base}/api/v1/tickets/01ABC") as response:
            assert response.status == 401


async def _closed_with(bound: Bound, frames: list[str]) -> tuple[int, str]:
    ws = await connect(f"ws://{bound.seats[0]}:{bound.seats[1]}")
    for frame in frames:
        await ws.send(frame)
    with pytest.raises(ConnectionClosed) as caught:
        while True:
            await ws.recv()
    assert caught.value.rcvd is not None
    return caught.value.rcvd.code, caught.value.rcvd.reason


async def test_wrong_token_unknown_agent_and_first_frame(config: GatewayConfig) -> None:
    async with running_gateway(config) as (_, bound):
        wrong_token = await _closed_with(bound, [json.dumps({"type": "hello", "agent": "a1", "token": "nope"})])
        unknown = await _closed_with(bound, [json.dumps({"type": "hello", "agent": "ghost", "token": "nope"})])
        not_hello = await _closed_with(bound, [json.dumps({"type": "ping"})])
        assert wrong_token == unknown == not_hello == (4001, "authentication failed")


async def test_wrong_version_and_auth_timeout(config_factory: ConfigFactory) -> None:
    from peers.gateway_config import AGENT_TOKENS

    config = config_factory(seats={"listen": "127.0.0.1:0", "auth_timeout": 0.3})
    async with running_gateway(config) as (_, bound):
        hello = {"type": "hello", "v": 9, "agent": "a1", "token": AGENT_TOKENS["a1"]}
        code, _ = await _closed_with(bound, [json.dumps(hello)])
        assert code == 4003
        code, reason = await _closed_with(bound, [])
        assert code == 4002 and "hello" in reason


async def test_bad_frames_get_error_frames_and_the_seat_lives(config_factory: ConfigFactory) -> None:
    config = config_factory(seats={"listen": "127.0.0.1:0", "max_frame_bytes": 1024})
    async with running_gateway(config) as (_gateway, bound):
        seat = await Seat.connect(bound, "a1")
        await seat.ws.send("{oops")
        assert (await seat.expect("error"))["code"] == "invalid_json"
        await seat.send(type="dance")
        error = await seat.expect("error")
        assert error["code"] == "unknown_type" and error["re"] is not None
        await seat.send(type="accept")
        error = await seat.expect("error")
        assert error["code"] == "invalid" and error["fields"][0]["path"] == "ticket"
        await seat.send(type="reply", ticket="01ABC", text="x" * 2000)
        assert (await seat.expect("error"))["code"] == "too_large"
        await seat.send(type="accept", ticket="01NOTOFFERED")
        assert (await seat.expect("error"))["code"] == "not_found"
        await seat.send(type="submit", ticket="01NOTOFFERED")
        assert (await seat.expect("error"))["code"] == "not_found"
        await seat.send(type="update", ticket="01NOTOFFERED", fields={"colour": "red"})
        assert (await seat.expect("error"))["code"] == "not_found"
        # Way beyond the limit: the connection is closed (1009), the gateway carries on.
        await seat.ws.send("x" * 8192)
        with pytest.raises(ConnectionClosed) as caught:
            await seat.expect("never")
        assert caught.value.rcvd is not None and caught.value.rcvd.code == 1009
        # Still serving: a new seat gets a new ticket.
        seat2 = await Seat.connect(bound, "a1")
        status, body = await post_intake(bound, {"text": "仍在服务"})
        assert status == 202
        assert (await seat2.expect("offer"))["ticket"]["id"] == body["ticket_id"]
        await seat2.send(type="update", ticket=body["ticket_id"], fields={"colour": "red"})
        assert (await seat2.expect("error"))["code"] == "conflict"
        await seat2.close()


async def test_edit_of_a_field_that_is_not_editable(config: GatewayConfig) -> None:
    async with running_gateway(config) as (_, bound):
        seat = await Seat.connect(bound, "a1")
        _, body = await post_intake(bound, {"text": "x"})
        await seat.expect("offer")
        await seat.send(type="accept", ticket=body["ticket_id"])
        await seat.expect("ticket")
        await seat.send(type="update", ticket=body["ticket_id"], fields={"status": "submitted"})
        error = await seat.expect("error")
        assert error["code"] == "invalid" and "status" in error["message"]
        await seat.send(type="update", ticket=body["ticket_id"], fields={"citizen_phone": "not a phone"})
        assert (await seat.expect("error"))["code"] == "invalid"
        await seat.close()
