"""Load and failure tests with real processes: nothing lost, nothing duplicated, never double-offered.

Marked slow; `make test` (and so CI) runs them.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis
import tomli_w
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from gateway.config import hash_secret, parse_config
from gateway.shell.app import Bound
from gateway.shell.embedded_redis import EmbeddedRedis, free_port
from gateway.ticket import Ticket
from peers.gateway_config import API_KEY, make_raw_config
from tests.conftest import ConfigFactory
from tests.helpers import GatewayProcess, running_gateway
from tests.redis_typed import stream_entries

pytestmark = pytest.mark.slow

WORKERS = [f"g{n}" for n in range(6)]


def worker_agents() -> list[dict[str, Any]]:
    return [
        {"id": a, "name": a, "skills": ["general"], "token_hash": hash_secret(f"tok-{a}-" + "w" * 20)} for a in WORKERS
    ]


class Ledger:
    """What the seats saw: offers per ticket and what was submitted. (Whether a ticket was ever
    offered to two seats at once is read from its history, the server's own record: seats in one
    test process may read a revocation after another seat already got the new offer.)"""

    def __init__(self) -> None:
        self.holder: dict[str, str] = {}
        self.offers: Counter[str] = Counter()
        self.submitted: set[str] = set()

    def offered(self, ticket: str, agent: str) -> None:
        self.offers[ticket] += 1
        self.holder[ticket] = agent

    def dropped(self, agent: str) -> None:
        for ticket, holder in list(self.holder.items()):
            if holder == agent:
                del self.holder[ticket]


async def chaotic_seat(bound: Bound, agent: str, ledger: Ledger, total: int, rng: random.Random) -> None:
    """Accepts and submits, but sometimes ignores, declines or hangs up mid-ticket."""
    while len(ledger.submitted) < total:
        ws = await connect(f"ws://{bound.seats[0]}:{bound.seats[1]}")
        await ws.send(
            json.dumps({"type": "hello", "agent": agent, "token": f"tok-{agent}-" + "w" * 20, "state": "ready"})
        )
        try:
            await _serve_until_chaos(ws, agent, ledger, total, rng)
        except ConnectionClosed:
            pass
        finally:
            ledger.dropped(agent)
            await ws.close()


async def _serve_until_chaos(ws: Any, agent: str, ledger: Ledger, total: int, rng: random.Random) -> None:
    while len(ledger.submitted) < total:
        try:
            async with asyncio.timeout(0.5):
                frame = json.loads(await ws.recv())
        except TimeoutError:
            continue
        kind = frame["type"]
        if kind == "welcome":
            for ticket in frame["resumed"]:
                ledger.holder[ticket["id"]] = agent
                await ws.send(json.dumps({"type": "submit", "ticket": ticket["id"]}))
        elif kind == "offer":
            ticket = frame["ticket"]["id"]
            ledger.offered(ticket, agent)
            roll = rng.random()
            if roll < 0.05:
                return  # hang up holding an offer
            if roll < 0.08:
                ledger.holder.pop(ticket, None)
                await ws.send(json.dumps({"type": "decline", "ticket": ticket}))
            elif roll > 0.03 + 0.08:
                await ws.send(json.dumps({"type": "accept", "ticket": ticket}))
            # else: ignore it; the offer times out
        elif kind == "offer_revoked":
            ledger.holder.pop(frame["ticket"], None)
        elif kind == "state" and frame["state"] == "away":
            await ws.send(json.dumps({"type": "state", "state": "ready"}))
        elif kind == "ticket" and frame["ticket"]["status"] == "claimed":
            if rng.random() < 0.05:
                return  # hang up holding a claimed ticket; it comes back on reconnect or after grace
            await ws.send(json.dumps({"type": "submit", "ticket": frame["ticket"]["id"]}))
        elif kind == "ack" and frame.get("status") == "submitted":
            ledger.submitted.add(frame["ticket"])
            ledger.holder.pop(frame["ticket"], None)


async def post_many(bounds: list[Bound], count: int, concurrency: int = 32, prefix: str = "m") -> dict[str, str]:
    """Post `count` tickets round-robin over the gateways; returns message id -> ticket id (202s only)."""
    acked: dict[str, str] = {}
    pending = iter(range(count))
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}

    async def poster(session: aiohttp.ClientSession) -> None:
        for n in pending:
            bound = bounds[n % len(bounds)]
            url = f"http://{bound.http[0]}:{bound.http[1]}/api/v1/intake"
            body = json.dumps({"text": f"第{n}号诉求", "message_id": f"{prefix}-{n}"})
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    if response.status == 202:
                        acked[f"{prefix}-{n}"] = (await response.json())["ticket_id"]
            except aiohttp.ClientError:
                continue

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(poster(session) for _ in range(concurrency)))
    return acked


async def submitted(client: aioredis.Redis, prefix: str) -> list[Ticket]:
    entries = stream_entries(await client.xrange(f"{prefix}:submitted"))
    return [Ticket.from_json(fields["ticket"]) for _, fields in entries]


def holder_violations(ticket: Ticket) -> list[str]:
    """Replay the ticket's history (written by the same atomic step as each change): an `offered`
    while someone still holds the ticket would be a double offer."""
    holder: str | None = None
    found = []
    for entry in ticket.history:
        if entry.action == "offered":
            if holder is not None:
                found.append(f"{ticket.id} offered to {entry.detail['agent']} while {holder} holds it")
            holder = entry.detail["agent"]
        elif entry.action in ("requeued", "submitted", "abandoned"):
            holder = None
    return found


# Offers that lapse, seats that drop and come back, declines: quick, so the chaos turns over often.
CHAOS_SEATS = {"listen": "127.0.0.1:0", "offer_timeout": 0.5, "reconnect_grace": 0.5, "decline_cooldown": 0.2}


async def test_thousand_tickets_with_chaotic_seats(
    config_factory: ConfigFactory, key_prefix: str, redis_client: aioredis.Redis
) -> None:
    config = config_factory(agents=worker_agents(), seats=CHAOS_SEATS)
    async with running_gateway(config) as (gateway, bound):
        ledger = Ledger()
        acked = await post_many([bound], 1000)
        assert len(acked) == 1000
        rng = random.Random(12345)
        seats = asyncio.gather(*(chaotic_seat(bound, agent, ledger, 1000, rng) for agent in WORKERS))
        try:
            async with asyncio.timeout(120):
                await seats
        except TimeoutError:
            seats.cancel()
            tickets = [await gateway.queue.get(i) for i in acked.values()]
            stuck = [(t.status, t.agent, t.history[-3:]) for t in tickets if t.id not in ledger.submitted]
            pytest.fail(f"{len(stuck)} ticket(s) never submitted, e.g. {stuck[:3]}")
        tickets = await submitted(redis_client, key_prefix)
    ids = [t.id for t in tickets]
    assert [v for t in tickets for v in holder_violations(t)] == []
    assert len(ids) == 1000, "every ticket submitted"
    assert len(set(ids)) == 1000, "none submitted twice"
    assert set(ids) == set(acked.values())
    assert sum(ledger.offers.values()) > 1000, "the chaos did return some offers to the queue"


def write_config(tmp_path: Path, raw: dict[str, Any], name: str = "gateway.toml") -> str:
    path = tmp_path / name
    path.write_text(tomli_w.dumps(raw))
    parse_config(raw, tmp_path)  # fail here, not in the child, if the test's config is wrong
    return str(path)


async def test_two_gateway_processes_never_double_offer(
    redis_server: EmbeddedRedis, key_prefix: str, tmp_path: Path, redis_client: aioredis.Redis
) -> None:
    raw = make_raw_config(key_prefix, redis_server.url, agents=worker_agents(), seats=CHAOS_SEATS)
    path = write_config(tmp_path, raw)
    gateways = [GatewayProcess(path), GatewayProcess(path)]
    try:
        bounds = [await g.start() for g in gateways]
        ledger = Ledger()
        rng = random.Random(7)
        seats = [
            asyncio.create_task(chaotic_seat(bounds[n % 2], agent, ledger, 600, rng)) for n, agent in enumerate(WORKERS)
        ]
        acked = await post_many(bounds, 600)
        async with asyncio.timeout(120):
            await asyncio.gather(*seats)
        tickets = await submitted(redis_client, key_prefix)
    finally:
        for gateway in gateways:
            await gateway.stop()
    ids = [t.id for t in tickets]
    assert len(acked) == 600
    assert [v for t in tickets for v in holder_violations(t)] == []
    assert sorted(ids) == sorted(acked.values())


async def test_sigkill_mid_burst_loses_and_duplicates_nothing(key_prefix: str, tmp_path: Path) -> None:
    port = free_port()
    raw = make_raw_config(
        key_prefix,
        "",
        redis={"key_prefix": key_prefix, "embedded": {"port": port, "dir": str(tmp_path / "redis")}},
    )
    raw["redis"].pop("url", None)
    path = write_config(tmp_path, raw)
    gateway = GatewayProcess(path)
    bound = await gateway.start()
    burst = asyncio.create_task(post_many([bound], 1000, concurrency=16, prefix="burst"))
    client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}")
    try:
        async with asyncio.timeout(30):
            while await client.xlen(f"{key_prefix}:q:general:0") < 300:
                await asyncio.sleep(0.01)
    finally:
        await client.aclose()
    gateway.kill()  # SIGKILL: no cleanup; the embedded Redis is taken down with it
    acked = await burst
    assert 0 < len(acked) < 1000, "the kill landed mid-burst"
    await gateway.stop()

    restarted = GatewayProcess(path)
    bound = await restarted.start()
    try:
        again = await post_many([bound], 1000, concurrency=16, prefix="burst")
        client = aioredis.Redis.from_url(f"redis://127.0.0.1:{port}")
        queued = await client.xlen(f"{key_prefix}:q:general:0")
        await client.aclose()
    finally:
        await restarted.stop()
    assert len(again) == 1000
    for message_id, ticket_id in acked.items():
        assert again[message_id] == ticket_id, "an acknowledged ticket survived the kill, once"
    assert queued == 1000, "exactly one ticket per message"
