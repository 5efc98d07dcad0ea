"""The HTTP API's contract (issue #17): idempotency per client, honest 404s, JSON errors everywhere."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from typing import Any

import aiohttp
import pytest

from gateway.config import GatewayConfig, hash_secret
from gateway.ticket import DeadlineClock, new_ticket_id, utcnow
from gateway.triage.escalate import Escalator
from peers.gateway_config import API_KEY
from tests.conftest import ConfigFactory
from tests.helpers import queued_ticket
from tests.web.http_support import HttpServer, http_server, raw_exchange, split_response

CST = timezone(timedelta(hours=8))

GRID_KEY = "key-grid-app-" + "g" * 32
READER_KEY = "key-reader-" + "r" * 32
SMS_KEY = "key-sms-gw-" + "s" * 32


@pytest.fixture
def clients_config(config_factory: ConfigFactory) -> GatewayConfig:
    """The web form and the grid workers' app both post `web` tickets; a reader; an SMS gateway."""
    return config_factory(
        api_clients=[
            {"id": "webform", "key_hash": hash_secret(API_KEY), "channels": ["web", "wechat"]},
            {"id": "grid", "key_hash": hash_secret(GRID_KEY), "channels": ["web"]},
            {"id": "reader", "key_hash": hash_secret(READER_KEY), "channels": ["web", "sms"], "read_only": True},
            {"id": "smsgw", "key_hash": hash_secret(SMS_KEY), "channels": ["sms"]},
        ]
    )


async def call(
    server: HttpServer, method: str, path: str, key: str | None = API_KEY, body: Any = None, **headers: str
) -> tuple[int, dict[str, str], Any]:
    all_headers = {"Content-Type": "application/json", **headers}
    if key:
        all_headers["Authorization"] = f"Bearer {key}"
    data = body if isinstance(body, bytes) or body is None else json.dumps(body, ensure_ascii=False).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, server.url + path, data=data, headers=all_headers) as response,
    ):
        assert response.content_type == "application/json", f"{method} {path}: {response.content_type}"
        return response.status, dict(response.headers), await response.json()


async def intake(server: HttpServer, key: str, body: Any, **headers: str) -> tuple[int, Any]:
    status, _, payload = await call(server, "POST", "/api/v1/intake", key, body, **headers)
    return status, payload


async def test_idempotency_keys_belong_to_their_client(clients_config: GatewayConfig) -> None:
    async with http_server(clients_config) as server:
        key = {"Idempotency-Key": "form-0001"}
        status, form = await intake(server, API_KEY, {"text": "幸福路路灯不亮"}, **key)
        assert status == 202 and form["duplicate"] is False
        status, grid = await intake(server, GRID_KEY, {"text": "井盖缺失"}, **key)
        assert status == 202 and grid["duplicate"] is False, "another client's form-0001 is another message"
        assert grid["ticket_id"] != form["ticket_id"]
        assert (await server.queue.get(grid["ticket_id"])).text == "井盖缺失"
        # Each client's retry finds its own ticket, never the other's.
        assert await intake(server, API_KEY, {"text": "幸福路路灯不亮"}, **key) == (202, {**form, "duplicate": True})
        assert await intake(server, GRID_KEY, {"text": "井盖缺失"}, **key) == (202, {**grid, "duplicate": True})
        assert await server.queue.waiting("general") == 2


async def test_a_reused_key_with_another_body_is_a_conflict(clients_config: GatewayConfig) -> None:
    async with http_server(clients_config) as server:
        status, first = await intake(server, API_KEY, {"text": "原诉求", "message_id": "m-9"})
        assert status == 202
        status, body = await intake(server, API_KEY, {"text": "另一个诉求", "message_id": "m-9"})
        assert status == 409 and body["error"]["code"] == "conflict"
        assert first["ticket_id"] not in json.dumps(body)
        # The same request again, re-encoded, is a retry.
        raw = b'{"message_id":"m-9","text":"\\u539f\\u8bc9\\u6c42"}'
        assert await intake(server, API_KEY, raw) == (202, {**first, "duplicate": True})
        assert await server.queue.waiting("general") == 1


async def test_ticket_lookup_answers_404_for_all_it_will_not_show(clients_config: GatewayConfig) -> None:
    async with http_server(clients_config) as server:
        status, sms = await intake(server, SMS_KEY, {"channel": "sms", "text": "短信诉求"})
        assert status == 202
        sms_id = sms["ticket_id"]
        assert (await call(server, "GET", f"/api/v1/tickets/{sms_id}", SMS_KEY))[0] == 200
        assert (await call(server, "GET", f"/api/v1/tickets/{sms_id}", READER_KEY))[0] == 200
        answers = [
            await call(server, "GET", f"/api/v1/tickets/{sms_id}", API_KEY),  # another channel's
            await call(server, "GET", f"/api/v1/tickets/{new_ticket_id(utcnow())}", API_KEY),  # unknown
            await call(server, "GET", f"/api/v1/tickets/{sms_id}:h", SMS_KEY),  # its history key
            await call(server, "GET", "/api/v1/tickets/nope", SMS_KEY),
        ]
        assert {(status, json.dumps(body)) for status, _, body in answers} == {
            (404, json.dumps({"error": {"code": "not_found", "message": "no such ticket"}}))
        }
        status, _, body = await call(server, "GET", f"/api/v1/tickets/{sms_id}", "wrong-key")
        assert status == 401 and body["error"]["code"] == "unauthorized"


async def test_a_read_only_client_submits_nothing(clients_config: GatewayConfig) -> None:
    async with http_server(clients_config) as server:
        status, body = await intake(server, READER_KEY, {"text": "不该收下"})
        assert status == 403 and body["error"]["code"] == "forbidden"
        assert await server.queue.waiting("general") == 0


async def test_every_problem_in_one_400(config: GatewayConfig) -> None:
    async with http_server(config) as server:
        status, body = await intake(server, API_KEY, {"text": "", "queue": "nope"})
        assert status == 400
        assert {f["path"] for f in body["error"]["fields"]} == {"text", "queue"}
        status, body = await intake(server, API_KEY, {"text": "\u200b\u200d", "citizen": {"name": "\x1b\x07\u3000"}})
        assert status == 400
        assert {f["path"] for f in body["error"]["fields"]} == {"text", "citizen.name"}
        status, body = await intake(server, API_KEY, {"text": "x", "priority": 42}, **{"Idempotency-Key": "a b"})
        assert {f["path"] for f in body["error"]["fields"]} == {"Idempotency-Key", "priority"}


async def test_text_reaches_the_ticket_cleaned(config: GatewayConfig) -> None:
    async with http_server(config) as server:
        text = "\x1b[2J\x1b[H幸福路\u202e12号\r\n路灯不亮"
        status, body = await intake(server, API_KEY, {"text": text, "citizen": {"name": "陈\u2066先生"}})
        assert status == 202
        ticket = await server.queue.get(body["ticket_id"])
        assert (ticket.text, ticket.citizen.name) == ("[2J[H幸福路12号\n路灯不亮", "陈先生")


@pytest.mark.parametrize("levels", [33, 250, 20_000])
async def test_deep_json_is_a_clear_400(config: GatewayConfig, levels: int) -> None:
    async with http_server(config) as server:
        body = b'{"text": "x", "flags": ' + b"[" * levels + b"]" * levels + b"}"
        status, payload = await intake(server, API_KEY, body)
        assert status == 400
        assert payload == {
            "error": {
                "code": "invalid",
                "message": "the request body is not a valid intake",
                "fields": [{"path": "body", "message": "nested deeper than 32 levels"}],
            }
        }


async def test_errors_are_json_without_echo_or_banner(config: GatewayConfig) -> None:
    async with http_server(config) as server:
        status, headers, body = await call(server, "GET", "/no/such/13812345678")
        assert (status, body["error"]["code"]) == (404, "not_found")
        assert "13812345678" not in json.dumps(body)
        status, headers, body = await call(server, "DELETE", "/api/v1/intake")
        assert (status, body["error"]["code"]) == (405, "method_not_allowed")
        assert "POST" in headers["Allow"]
        status, headers, body = await call(server, "GET", "/healthz")
        assert status == 200 and headers["Server"] == "hotline-gateway"
        for raw in (
            b"GET /\x01secret-path HTTP/1.1\r\nHost: x\r\n\r\n",  # bad request target
            b"BREW\x7f /pot HTTP/1.1\r\n\r\n",  # not a method
            b"GET / HTTP/1.1\r\nX-Long: " + b"v" * 9000 + b"\r\n\r\n",  # header too long
            b"POST /api/v1/intake HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nsecret\r\n",
        ):
            status, headers, payload = split_response(await raw_exchange(server.address, raw))
            assert 400 <= status < 500, raw[:40]
            assert headers["content-type"].startswith("application/json"), raw[:40]
            assert headers["server"] == "hotline-gateway"
            error = json.loads(payload)["error"]
            assert error["code"] == "invalid"
            for echoed in (b"secret", b"vvvv", b"BREW", b"pot"):
                assert echoed not in payload, (raw[:40], payload)


async def test_a_tickets_deadlines_come_with_their_colour_now(config: GatewayConfig) -> None:
    now = utcnow()
    clocks = (  # received an hour ago: the contact clock met by the claim, the resolve clock overdue
        DeadlineClock(name="contact", limit="2h", due=now + timedelta(hours=1)),
        DeadlineClock(name="resolve", limit="24h", due=now - timedelta(minutes=5)),
    )
    async with http_server(config) as server:
        ticket = queued_ticket("m-clocks", clocks=clocks, received_at=now - timedelta(hours=1))
        await server.queue.intake(ticket, "client:webform", "webform")
        offered = await server.queue.offer("a1", ["general"])
        assert offered is not None and offered.id == ticket.id
        await server.queue.accept(ticket.id, "a1")
        status, _, body = await call(server, "GET", f"/api/v1/tickets/{ticket.id}")
    assert status == 200, body
    assert [(d["name"], d["limit"], d["colour"], "met_at" in d) for d in body["deadlines"]] == [
        ("contact", "2h", "green", True),
        ("resolve", "24h", "red", False),
    ]
    assert all("escalations" not in d for d in body["deadlines"]), "none sent yet"


async def test_a_tickets_deadlines_list_the_escalations_it_was_sent(config: GatewayConfig) -> None:
    received = datetime(2026, 3, 10, 10, 0, tzinfo=CST)  # a Tuesday: 3 working days end on Friday
    clock = DeadlineClock(name="resolve", limit="3wd", due=datetime(2026, 3, 13, 17, 30, tzinfo=CST))
    async with http_server(config) as server:
        ticket = queued_ticket("m-escalated", clocks=(clock,), received_at=received)
        await server.queue.intake(ticket, "client:webform", "webform")
        await server.queue.redis.zadd(server.queue.keys.escalate, {ticket.id: int(received.timestamp() * 1000)})
        sent_at = datetime(2026, 3, 16, 9, 0, tzinfo=CST)  # Monday, after the reminder's opening
        assert await Escalator(server.queue.live, server.queue).escalate_due(sent_at) == 1
        status, _, body = await call(server, "GET", f"/api/v1/tickets/{ticket.id}")
    assert status == 200, body
    (resolve,) = body["deadlines"]
    assert (resolve["colour"], resolve["escalations"]) == ("red", [{"kind": "reminder", "at": sent_at.isoformat()}])
    (line,) = [entry for entry in body["history"] if entry["action"] == "escalated"]
    assert (line["actor"], line["detail"]) == ("triage", {"clock": "resolve", "kind": "reminder"})
