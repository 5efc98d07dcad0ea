"""Out of file descriptors (issue #17): one log line per interval, and intake recovers."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from pathlib import Path

import aiohttp
import pytest

from gateway.shell.embedded_redis import EmbeddedRedis
from peers.gateway_config import API_KEY
from tests.web.fd_exhaustion_server import REPORT_INTERVAL

NOFILE = 64  # the server's own files take ~30 of these
SLOW_CLIENTS = 150
EXHAUSTED_FOR = 3.0  # seconds: three report intervals


async def read_lines(stream: asyncio.StreamReader, lines: list[str]) -> None:
    while line := await stream.readline():
        lines.append(line.decode(errors="replace").rstrip())


async def open_slow(host: str, port: int) -> asyncio.StreamWriter | None:
    """A connection that sends half a request head; None when the server's backlog is full too."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 2.0)
    except (TimeoutError, OSError):
        return None
    writer.write(b"POST /api/v1/intake HTTP/1.1\r\n")
    return writer


@pytest.mark.slow
async def test_out_of_descriptors_logs_once_per_interval_and_recovers(
    redis_server: EmbeddedRedis, key_prefix: str, tmp_path: Path
) -> None:
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "tests.web.fd_exhaustion_server", redis_server.url, key_prefix, str(NOFILE),
        str(tmp_path), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, cwd=Path(__file__).parents[2],
    )  # fmt: skip
    assert server.stdout is not None and server.stderr is not None and server.stdin is not None
    log: list[str] = []
    reading = asyncio.create_task(read_lines(server.stderr, log))
    slow: list[asyncio.StreamWriter] = []
    try:
        async with asyncio.timeout(30):
            ready = (await server.stdout.readline()).decode()
        assert ready.startswith("ready "), log
        url = ready.split()[1]
        host, port = url.removeprefix("http://").rsplit(":", 1)
        async with aiohttp.ClientSession() as http:
            headers = {"Authorization": f"Bearer {API_KEY}"}
            async with http.post(f"{url}/api/v1/intake", json={"text": "先到"}, headers=headers) as response:
                assert response.status == 202

            opened = await asyncio.gather(*(open_slow(host, int(port)) for _ in range(SLOW_CLIENTS)))
            slow = [writer for writer in opened if writer is not None]
            await asyncio.sleep(EXHAUSTED_FOR)  # exhaustion lasts this long: the test is about its log
            exhausted = [line for line in log if "out of file descriptors" in line]
            assert 1 <= len(exhausted) <= EXHAUSTED_FOR / REPORT_INTERVAL + 2, exhausted
            assert "since the last such line" in exhausted[-1]

            for writer in slow:
                writer.close()
            slow = []
            async with (
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as fresh,
                fresh.post(f"{url}/api/v1/intake", json={"text": "慢客户走后"}, headers=headers) as response,
            ):
                assert response.status == 202, "intake recovers once the slow clients leave"
        assert any(f"file-descriptor limit is {NOFILE}" in line for line in log), "warned at start"
        assert len(log) < 30, f"{len(log)} log lines: {log[:10]}"
    finally:
        for writer in slow:
            writer.close()
        with contextlib.suppress(ProcessLookupError):
            server.stdin.close()
        try:
            await asyncio.wait_for(server.wait(), 10)
        except TimeoutError:
            server.kill()
            await server.wait()
        reading.cancel()
