"""Redis frozen or restarted under a running gateway: what a 503 means, and the first requests after."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.config import GatewayConfig, parse_config
from gateway.shell.app import Gateway, redis_client
from gateway.shell.embedded_redis import EmbeddedRedis
from peers.gateway_config import API_KEY, make_raw_config

HEADERS = {"Authorization": f"Bearer {API_KEY}"}


@asynccontextmanager
async def running(config: GatewayConfig, client: aioredis.Redis) -> AsyncIterator[tuple[Gateway, str]]:
    """The whole gateway (seats, dispatcher, reaper, pub/sub) on the production Redis client."""
    gateway = Gateway(config, client)
    bound = await gateway.start()
    try:
        yield gateway, f"http://{bound.http[0]}:{bound.http[1]}"
    finally:
        await gateway.stop()
        await client.aclose()


async def post(http: aiohttp.ClientSession, url: str, body: dict[str, Any], key: str | None = None) -> tuple[int, Any]:
    headers = {**HEADERS, **({"Idempotency-Key": key} if key else {})}
    async with http.post(f"{url}/api/v1/intake", json=body, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.slow
async def test_every_503_retried_with_its_key_is_one_ticket(
    own_redis: EmbeddedRedis, key_prefix: str, tmp_path: Path
) -> None:
    raw = make_raw_config(key_prefix, own_redis.url)
    raw["redis"].update(command_timeout=1.0, connect_timeout=1.0)
    config = parse_config(raw, tmp_path)
    client = redis_client(own_redis.url, config.redis)
    assert own_redis._process is not None
    async with running(config, client) as (gateway, url), aiohttp.ClientSession() as http:
        assert (await post(http, url, {"text": "冻结前"}))[0] == 202
        # Half the clients send their own key, half none.
        bodies = [({"text": f"诉求{n}"}, f"own-{n}" if n % 2 else None) for n in range(50)]
        os.kill(own_redis._process.pid, signal.SIGSTOP)
        frozen = await asyncio.gather(*(post(http, url, body, key) for body, key in bodies))
        os.kill(own_redis._process.pid, signal.SIGCONT)
        assert {status for status, _ in frozen} == {503}
        keys = [answer["error"]["idempotency_key"] for _, answer in frozen]
        assert [k for k, (_, own) in zip(keys, bodies, strict=True) if own] == [k for _, k in bodies if k]
        assert len(set(keys)) == 50, "every intake without a key got a key of its own"

        retried = await asyncio.gather(*(post(http, url, body, k) for (body, _), k in zip(bodies, keys, strict=True)))
        assert {status for status, _ in retried} == {202}
        ids = [answer["ticket_id"] for _, answer in retried]
        assert len(set(ids)) == 50
        for (body, _), ticket_id in zip(bodies, ids, strict=True):
            assert (await gateway.queue.get(ticket_id)).text == body["text"]
        # Stored when Redis resumed (duplicate) or by the retry: either way once.
        assert await gateway.queue.waiting("general") == 51, "no ticket twice, none lost"


@pytest.mark.slow
async def test_the_first_intakes_after_a_redis_restart_succeed(
    own_redis: EmbeddedRedis, key_prefix: str, tmp_path: Path
) -> None:
    config = parse_config(make_raw_config(key_prefix, own_redis.url), tmp_path)
    client = redis_client(own_redis.url, config.redis)
    async with running(config, client) as (gateway, url), aiohttp.ClientSession() as http:
        # Fill the pool with connections that the restart will leave dead.
        before = await asyncio.gather(*(post(http, url, {"text": f"重启前{n}"}) for n in range(60)))
        assert {status for status, _ in before} == {202}
        own_redis.stop()
        own_redis.start()
        after = await asyncio.gather(*(post(http, url, {"text": f"重启后{n}"}) for n in range(60)))
        assert [status for status, _ in after] == [202] * 60, [answer for _, answer in after][:3]
        assert await gateway.queue.waiting("general") == 120, "the append-only file kept the first 60"
        assert (await gateway.queue.get(after[0][1]["ticket_id"])).text == "重启后0"
