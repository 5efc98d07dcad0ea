"""Redis unreachable: intake answers 503 (nothing half-accepted), and recovers when Redis returns."""

from __future__ import annotations

from pathlib import Path

import aiohttp

from gateway.config import parse_config
from gateway.shell.embedded_redis import EmbeddedRedis, free_port
from peers.gateway_config import make_raw_config
from tests.helpers import post_intake, running_gateway


async def test_intake_is_refused_while_redis_is_down(tmp_path: Path, key_prefix: str) -> None:
    server = EmbeddedRedis(port=free_port(), data_dir=tmp_path / "redis")
    server.start()
    try:
        config = parse_config(make_raw_config(key_prefix, server.url), tmp_path)
        async with running_gateway(config) as (gateway, bound), aiohttp.ClientSession() as http:
            status, before = await post_intake(bound, {"text": "停电前"})
            assert status == 202
            server.stop()
            status, body = await post_intake(bound, {"text": "停电中"})
            assert status == 503 and body["error"]["code"] == "unavailable"
            async with http.get(f"http://{bound.http[0]}:{bound.http[1]}/readyz") as response:
                assert response.status == 503
            server.start()
            status, _ = await post_intake(bound, {"text": "恢复后"})
            assert status == 202
            assert (await gateway.queue.get(before["ticket_id"])).text == "停电前"
            assert await gateway.queue.waiting("general") == 2
    finally:
        server.stop()
