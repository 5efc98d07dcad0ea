"""Slow and numerous HTTP peers: header and body timeouts, the connection limit (issue #17)."""

from __future__ import annotations

import asyncio
import errno
import json
import logging

import aiohttp
import pytest

from gateway.web.http_server import Throttled, throttle_accept_errors
from peers.gateway_config import API_KEY
from tests.conftest import ConfigFactory
from tests.web.http_support import HttpServer, http_server, split_response

# Short timeouts so a test can outlast them; a keep-alive timeout far beyond them, so what closes
# a connection in these tests is the timeout under test.
FAST = {"header_timeout": 0.5, "body_timeout": 0.5, "keepalive_timeout": 60.0, "lingering_time": 0.2}
LISTEN = {"listen": "127.0.0.1:0"}
CLOSED_WITHIN = 10.0  # generous: the machine is shared; only "closed, and not by keep-alive" matters


async def closed_by_server(reader: asyncio.StreamReader) -> bytes:
    """Everything the server sends until it closes the connection."""
    async with asyncio.timeout(CLOSED_WITHIN):
        return await reader.read()


async def test_a_slowloris_is_cut_after_the_header_timeout(config_factory: ConfigFactory) -> None:
    async with http_server(config_factory(http={**LISTEN, **FAST})) as server:
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"POST /api/v1/intake HTTP/1.1\r\nHost: x\r\n")

        async def trickle() -> None:
            for _ in range(int(CLOSED_WITHIN * 10)):
                writer.write(b"X-Slow: 1\r\n")
                await writer.drain()
                await asyncio.sleep(0.1)

        trickling = asyncio.create_task(trickle())
        try:
            assert await closed_by_server(reader) == b"", "cut without an answer, though it kept sending"
        finally:
            trickling.cancel()
            writer.close()
        assert server.acceptor.open_connections == 0


async def test_a_connection_that_sends_nothing_is_cut(config_factory: ConfigFactory) -> None:
    async with http_server(config_factory(http={**LISTEN, **FAST})) as server:
        reader, writer = await asyncio.open_connection(*server.address)
        assert await closed_by_server(reader) == b""
        writer.close()


async def test_the_next_request_on_a_kept_alive_connection_is_timed_too(config_factory: ConfigFactory) -> None:
    async with http_server(config_factory(http={**LISTEN, **FAST})) as server:
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        await reader.readexactly(int(split_response(head)[1]["content-length"]))
        # Idle now, for longer than the header timeout (time passing is the point, not a wait for
        # an event): kept alive (keep-alive is 60 s here), until a request starts and stalls.
        await asyncio.sleep(FAST["header_timeout"] * 2)
        writer.write(b"GET /healthz HTTP/1.1\r\nHost")
        assert await closed_by_server(reader) == b""
        writer.close()


async def test_a_slow_body_gets_a_408_and_the_connection_closes(config_factory: ConfigFactory) -> None:
    async with http_server(config_factory(http={**LISTEN, **FAST})) as server:
        reader, writer = await asyncio.open_connection(*server.address)
        writer.write(
            b"POST /api/v1/intake HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode() + b"\r\n"
            b"Content-Type: application/json\r\nContent-Length: 100\r\n\r\n" + b'{"text": "'
        )
        status, _, body = split_response(await closed_by_server(reader))
        writer.close()
        assert status == 408
        assert json.loads(body)["error"] == {"code": "timeout", "message": "the body did not arrive within 0.5 s"}
        assert await server.queue.waiting("general") == 0


async def post(session: aiohttp.ClientSession, server: HttpServer, text: str) -> int:
    async with session.post(
        f"{server.url}/api/v1/intake", json={"text": text}, headers={"Authorization": f"Bearer {API_KEY}"}
    ) as response:
        return response.status


async def test_beyond_the_connection_limit_intake_waits_and_is_served(config_factory: ConfigFactory) -> None:
    limits = {"max_connections": 3, "header_timeout": 1.0, "keepalive_timeout": 60.0}
    async with (
        http_server(config_factory(http={**LISTEN, **limits})) as server,
        aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1)) as kept,
        aiohttp.ClientSession() as late,
    ):
        assert await post(kept, server, "连接已建立") == 202  # one kept-alive connection of three
        slow = [await asyncio.open_connection(*server.address) for _ in range(2)]
        for _, writer in slow:
            writer.write(b"POST /api/v1/intake HTTP/1.1\r\n")  # ... and never the rest
        while server.acceptor.open_connections < 3:
            await asyncio.sleep(0.01)  # polling a counter: the acceptor has no event to await
        waiting = asyncio.create_task(post(late, server, "排队等连接"))
        # At the limit: the late intake's connection waits in the backlog; the kept one still works.
        assert await post(kept, server, "不受影响") == 202
        assert not waiting.done() and server.acceptor.open_connections == 3
        # The slow ones are cut at their header timeout; the late intake gets its turn.
        assert await asyncio.wait_for(waiting, CLOSED_WITHIN) == 202
        for reader, writer in slow:
            assert await closed_by_server(reader) == b""
            writer.close()
        assert await server.queue.waiting("general") == 3


def test_throttled_logs_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    report = Throttled("out of file descriptors", interval=10.0, clock=lambda: now[0])
    caplog.set_level(logging.INFO, logger="gateway.http")
    logged = []
    for step in range(1000):
        now[0] = 100.0 + step * 0.05  # 20 a second for 50 s
        logged.append(report("EMFILE"))
    assert sum(logged) == 5 and logged[0]
    lines = [record.getMessage() for record in caplog.records]
    assert lines[0] == "out of file descriptors: EMFILE (1 since the last such line)"
    assert lines[1] == "out of file descriptors: EMFILE (200 since the last such line)"


async def test_asyncios_accept_exhaustion_reports_are_throttled(caplog: pytest.LogCaptureFixture) -> None:
    loop = asyncio.get_running_loop()
    others: list[str] = []
    loop.set_exception_handler(lambda _, context: others.append(context["message"]))
    try:
        throttle_accept_errors(loop, interval=60.0)
        caplog.set_level(logging.ERROR, logger="gateway.http")
        for _ in range(1000):
            loop.call_exception_handler(
                {"message": "socket.accept() out of system resource", "exception": OSError(errno.EMFILE, "")}
            )
        loop.call_exception_handler({"message": "something else"})
    finally:
        loop.set_exception_handler(None)
    assert [r.getMessage() for r in caplog.records] == [
        "out of file descriptors, seat accepts paused: EMFILE (1 since the last such line)"
    ]
    assert others == ["something else"]
