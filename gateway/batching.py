"""Coalesce the Lua script calls made in one event-loop turn into one Redis pipeline.

Under load, many coroutines (HTTP intakes, seat frames, dispatcher offers) each call a script in
the same loop turn. Sent one by one, each pays a pool checkout, a timeout context and a socket
write; sent together they cost one round trip. Each call still gets its own result or exception:
the scripts are independent atomic steps, so batching changes no semantics (`transaction=False`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import NoScriptError, RedisError


@dataclass
class _Call:
    script: Any  # redis.commands.core.AsyncScript
    keys: Sequence[str]
    args: Sequence[Any]
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class ScriptBatcher:
    def __init__(self, client: aioredis.Redis, max_batch: int = 256) -> None:
        self._redis = client
        self._max_batch = max_batch
        self._pending: list[_Call] = []
        self._scheduled = False

    async def call(self, script: Any, keys: Sequence[str], args: Sequence[Any]) -> Any:
        call = _Call(script, keys, args)
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

    async def _send(self, batch: list[_Call]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for call in batch:
                    pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
                results = await pipe.execute(raise_on_error=False)
        except BaseException as exc:
            # Every caller gets an answer, whatever went wrong (a cancelled send included): a future
            # left pending would hang its caller, and with it a seat's handler or a shutdown.
            failure = exc if isinstance(exc, RedisError | OSError) else RedisError(f"batch failed: {exc!r}")
            for call in batch:
                if not call.future.done():
                    call.future.set_exception(failure)
            if not isinstance(exc, Exception):
                raise
            return
        for call, result in zip(batch, results, strict=True):
            if isinstance(result, NoScriptError):
                # Redis restarted (or SCRIPT FLUSH): the script object loads it and runs it alone.
                asyncio.get_running_loop().create_task(self._alone(call))
            elif isinstance(result, Exception):
                call.future.set_exception(result)
            elif not call.future.done():
                call.future.set_result(result)

    @staticmethod
    async def _alone(call: _Call) -> None:
        try:
            result = await call.script(keys=list(call.keys), args=list(call.args))
        except (RedisError, OSError) as exc:
            if not call.future.done():
                call.future.set_exception(exc)
            return
        if not call.future.done():
            call.future.set_result(result)
