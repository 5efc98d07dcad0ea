"""Coalesce the Lua script calls made in one event-loop turn into one Redis pipeline.

Under load, many coroutines (HTTP intakes, seat frames, dispatcher offers) each call a script in
the same loop turn. Sent one by one, each pays a pool checkout, a timeout context and a socket
write; sent together they cost one round trip. Each call still gets its own result or exception:
the scripts are independent atomic steps, so batching changes no semantics (`transaction=False`).

Stale connections: after Redis restarts, every pooled connection is dead, and the first batch sent
on one fails as a whole. A failed connection means the others opened before it are as dead, so
the idle ones are dropped at once, and the calls whose script is safe to repeat
(`queue_scripts.REPEATABLE`) are sent again, up to `STALE_ATTEMPTS` times in all: a connection in
use while the idle ones were dropped may be dead as well, and is only found out by using it. The
others fail (503): a repeat of them could do twice what the first attempt may have done.

Scripts unknown to the server (it restarted, or SCRIPT FLUSH): a call answered NOSCRIPT did not
run, so every such call of a batch is sent again, as one batch, after the scripts were loaded once,
whatever their script (the same stale-connection rule applies to that second batch).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MaxConnectionsError, NoScriptError, RedisError

T = TypeVar("T")

# Sends in all of a repeatable call (or a read) while its connection turns out dead: the first, and
# the retries on fresh connections. Three: the dead connections in use when the idle ones were
# dropped are each found out by one failure of their own user, rarely of ours twice.
STALE_ATTEMPTS = 3


@dataclass
class _Call:
    script: Any  # redis.commands.core.AsyncScript
    keys: Sequence[str]
    args: Sequence[Any]
    repeatable: bool = False
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


def is_stale_connection(exc: BaseException) -> bool:
    """A connection failed (closed by the server, reset, refused): another one may do better.
    Not a timeout (the server may be executing the command), and not the pool finding no free
    connection in time (a retry would only wait as long again)."""
    if not isinstance(exc, RedisConnectionError) or isinstance(exc, MaxConnectionsError):
        return False
    return not isinstance(exc.__cause__, TimeoutError)  # BlockingConnectionPool's wait ran out


async def drop_idle_connections(client: aioredis.Redis) -> None:
    """Close the pooled connections nobody is using: they reconnect when next taken."""
    await client.connection_pool.disconnect(inuse_connections=False)


async def again_on_stale(client: aioredis.Redis, attempt: Callable[[], Awaitable[T]]) -> T:
    """Run `attempt`; while its connection was stale, drop the idle ones and run it again (up to
    `STALE_ATTEMPTS` runs). Only for what is safe to repeat (reads, idempotent writes)."""
    for _ in range(STALE_ATTEMPTS - 1):
        try:
            return await attempt()
        except RedisConnectionError as exc:
            if not is_stale_connection(exc):
                raise
        with contextlib.suppress(RedisError, OSError):  # closing a dead socket may fail as well
            await drop_idle_connections(client)
    return await attempt()


def _fail(calls: Sequence[_Call], failure: BaseException) -> None:
    for call in calls:
        if not call.future.done():
            call.future.set_exception(failure)


class ScriptBatcher:
    def __init__(self, client: aioredis.Redis, max_batch: int = 256) -> None:
        self._redis = client
        self._max_batch = max_batch
        self._pending: list[_Call] = []
        self._scheduled = False

    async def call(self, script: Any, keys: Sequence[str], args: Sequence[Any], repeatable: bool = False) -> Any:
        """Run `script` in the next batch. `repeatable`: the script may run twice for one call, so
        a stale connection is answered by one more attempt on a fresh one."""
        call = _Call(script, keys, args, repeatable)
        self._pending.append(call)
        if len(self._pending) >= self._max_batch:
            self._flush_soon(now=True)
        elif not self._scheduled:
            self._flush_soon(now=False)
        return await call.future

    def _flush_soon(self, now: bool) -> None:
        batch, self._pending = self._pending, []
        if now:
            asyncio.get_running_loop().create_task(self._send(batch))
            return
        self._pending = batch
        self._scheduled = True
        # call_soon runs after every callback already queued for this turn has added its call.
        asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if batch:
            asyncio.get_running_loop().create_task(self._send(batch))

    async def _send(self, batch: list[_Call], attempts: int = STALE_ATTEMPTS, loaded: bool = False) -> None:
        """Send `batch` and answer each call. `attempts`: sends left to a repeatable call while
        connections turn out stale; `loaded`: the scripts were just loaded for these calls."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for call in batch:
                    pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            # Every caller gets an answer, whatever went wrong (a cancelled send included): a future
            # left pending would hang its caller, and with it a seat's handler or a shutdown.
            failure = exc if isinstance(exc, RedisError | OSError) else RedisError(f"batch failed: {exc!r}")
            stale = attempts > 1 and isinstance(exc, Exception) and is_stale_connection(exc)
            again = [call for call in batch if stale and call.repeatable]
            _fail([call for call in batch if not (stale and call.repeatable)], failure)
            if not isinstance(exc, Exception):
                raise
            if again:
                await self._send_again(again, failure, attempts - 1, loaded)
            return
        unknown: list[_Call] = []
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError) and not loaded:
                unknown.append(call)  # it did not run: safe to send again, once its script is loaded
            elif isinstance(result, Exception):
                call.future.set_exception(result)
            elif not call.future.done():
                call.future.set_result(result)
        if unknown:
            await self._load_and_send(unknown, attempts)

    async def _send_again(self, calls: list[_Call], failure: BaseException, attempts: int, loaded: bool) -> None:
        try:
            with contextlib.suppress(RedisError, OSError):  # closing a dead socket may fail as well
                await drop_idle_connections(self._redis)
        except BaseException:  # cancelled: these calls still get their answer
            _fail(calls, failure)
            raise
        await self._send(calls, attempts, loaded)

    async def _load_and_send(self, calls: list[_Call], attempts: int) -> None:
        """Load each script these calls run (idempotent), then send them again as one batch."""
        sources = {call.script.sha: call.script.script for call in calls}.values()

        async def load() -> None:
            for source in sources:
                await self._redis.script_load(source)

        try:
            await again_on_stale(self._redis, load)
        except BaseException as exc:
            _fail(calls, exc if isinstance(exc, RedisError | OSError) else RedisError(f"script load failed: {exc!r}"))
            if not isinstance(exc, Exception):
                raise
            return
        await self._send(calls, attempts, loaded=True)
