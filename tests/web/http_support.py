"""The HTTP API alone (no seats), with limits of the test's choosing, and raw-socket requests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import redis.asyncio as aioredis
from aiohttp import web

from gateway.config import GatewayConfig
from gateway.queue import TicketQueue
from gateway.shell.app import redis_client
from gateway.web.http import start_http
from gateway.web.http_server import GuardedSite, _Acceptor


@dataclass
class HttpServer:
    runner: web.AppRunner
    queue: TicketQueue

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.runner.addresses[0][:2]
        return host, port

    @property
    def url(self) -> str:
        return f"http://{self.address[0]}:{self.address[1]}"

    @property
    def acceptor(self) -> _Acceptor:
        site = next(iter(self.runner.sites))
        assert isinstance(site, GuardedSite) and site.acceptor is not None
        return site.acceptor


@asynccontextmanager
async def http_server(config: GatewayConfig, client: aioredis.Redis | None = None) -> AsyncIterator[HttpServer]:
    """`start_http` as `Gateway.start` runs it (limits from `[http]`), on the production Redis
    client unless given one."""
    assert config.redis.url
    redis = client or redis_client(config.redis.url, config.redis)
    queue = TicketQueue(redis, config)
    await queue.ensure_groups()
    runner = await start_http(config, queue)
    try:
        yield HttpServer(runner, queue)
    finally:
        await runner.cleanup()
        await redis.aclose()


async def raw_exchange(address: tuple[str, int], data: bytes, timeout: float = 5.0) -> bytes:
    """Send `data` on a new connection and read until the server closes it."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        await writer.drain()
        async with asyncio.timeout(timeout):
            return await reader.read()
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, body
