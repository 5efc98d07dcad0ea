"""The script batcher against a real redis-server that restarts or forgets its scripts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError

from gateway.config import RedisConfig
from gateway.queue.batching import STALE_ATTEMPTS, ScriptBatcher, again_on_stale
from gateway.shell.app import redis_client
from gateway.shell.embedded_redis import EmbeddedRedis

# Counts its runs per key: a call run twice shows as 2.
COUNT = "return redis.call('INCR', KEYS[1])"
# A second script, to see each distinct script loaded once.
ECHO = "return ARGV[1]"


@pytest.fixture
async def client(own_redis: EmbeddedRedis) -> AsyncIterator[aioredis.Redis]:
    client = redis_client(own_redis.url, RedisConfig(url=own_redis.url))
    yield client
    await client.aclose()


async def fill_pool(client: aioredis.Redis, connections: int) -> None:
    """Leave `connections` idle connections in the pool (each blocked call holds one until done)."""
    await asyncio.gather(*(client.blpop([f"nothing:{n}"], timeout=0.05) for n in range(connections)))
    assert len(client.connection_pool._available_connections) >= connections


async def restarted_under(
    own_redis: EmbeddedRedis, client: aioredis.Redis, idle: int
) -> tuple[AsyncScript, ScriptBatcher]:
    """The counting script loaded, a batcher, `idle` connections pooled, then Redis restarted: each
    pooled connection dead, and the server knowing no script (nor any command counts)."""
    count = AsyncScript(client, COUNT)
    await client.script_load(COUNT)
    batcher = ScriptBatcher(client)
    await fill_pool(client, idle)
    own_redis.stop()
    own_redis.start()
    return count, batcher


async def command_calls(client: aioredis.Redis, command: str) -> int:
    stats = await client.info("commandstats")
    return int(stats.get(f"cmdstat_{command}", {}).get("calls", 0))


@pytest.mark.slow
async def test_after_a_restart_with_a_pool_of_dead_connections_every_repeatable_call_runs_once(
    own_redis: EmbeddedRedis, client: aioredis.Redis
) -> None:
    count, batcher = await restarted_under(own_redis, client, idle=20)
    keys = [f"runs:{n}" for n in range(60)]
    results = await asyncio.gather(*(batcher.call(count, [key], [], repeatable=True) for key in keys))
    assert results == [1] * 60, "each call answered by its one run"
    assert [int(v or 0) for v in await client.mget(keys)] == [1] * 60, "none ran twice"


async def test_calls_whose_script_the_server_forgot_are_loaded_once_and_sent_again_as_one_batch(
    own_redis: EmbeddedRedis, client: aioredis.Redis
) -> None:
    count, echo = AsyncScript(client, COUNT), AsyncScript(client, ECHO)
    batcher = ScriptBatcher(client)
    await client.script_flush()
    await client.config_resetstat()
    calls = [batcher.call(count, [f"runs:{n}"], []) for n in range(30)]
    calls += [batcher.call(echo, [], [f"回声{n}"]) for n in range(30)]
    results = await asyncio.gather(*calls)
    assert results[:30] == [1] * 30 and [r.decode() for r in results[30:]] == [f"回声{n}" for n in range(30)]
    assert await command_calls(client, "script|load") == 2, "each script loaded once, not once per call"
    assert await command_calls(client, "evalsha") == 120, "60 answered NOSCRIPT, then the same 60 ran"


async def test_a_call_not_safe_to_repeat_fails_on_a_dead_connection_and_is_not_sent_again(
    own_redis: EmbeddedRedis, client: aioredis.Redis
) -> None:
    count, batcher = await restarted_under(own_redis, client, idle=1)
    outcome = await asyncio.gather(batcher.call(count, ["runs:once"], []), return_exceptions=True)
    if isinstance(outcome[0], BaseException):  # its pooled connection was found dead by the send
        assert isinstance(outcome[0], RedisConnectionError)
        observer = aioredis.from_url(own_redis.url)
        assert await observer.get("runs:once") is None and await command_calls(observer, "evalsha") == 0
        await observer.aclose()
    else:  # the pool found it dead at checkout and reconnected first: then it ran, once
        assert list(outcome) == [1]


async def test_again_on_stale_runs_a_read_until_a_live_connection_answers_within_its_attempts(
    client: aioredis.Redis,
) -> None:
    failures = STALE_ATTEMPTS - 1
    runs = 0

    async def read() -> int:
        nonlocal runs
        runs += 1
        if runs <= failures:
            raise RedisConnectionError("Connection closed by server.")
        return runs

    assert await again_on_stale(client, read) == STALE_ATTEMPTS
    failures, runs = STALE_ATTEMPTS, 0
    with pytest.raises(RedisConnectionError):
        await again_on_stale(client, read)
    assert runs == STALE_ATTEMPTS, "no more runs than its attempts"
