"""The dead-worker janitor stops when cancelled, whenever the cancellation lands.

redis-py (8.1) can swallow a cancellation that arrives while XREAD BLOCK is being sent and return
an empty answer; the janitor's loop used to go on reading, and a test stack's teardown waited for
it until its 120 s deadline (seen once in a full CI run). Real Redis, cancellations at 0-49 ms.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import redis.asyncio as aioredis

from gateway.sipfront.janitor import DialogJanitor
from gateway.sipfront.rpc import FrontRpc


async def test_a_cancelled_janitor_stops_at_once_at_any_moment_of_its_blocking_read(
    redis_client: aioredis.Redis, key_prefix: str, tmp_path: Path
) -> None:
    janitor = DialogJanitor(redis_client, f"{key_prefix}:workers:dead", FrontRpc("kamcmd", tmp_path / "ctl"))
    slowest = 0.0
    loop = asyncio.get_running_loop()
    for step in range(100):
        task = asyncio.create_task(janitor.run())
        await asyncio.sleep((step % 50) / 1000)
        began = loop.time()
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=3.0)
        assert done, f"the janitor ignored its cancellation (cancelled {step % 50} ms after it started)"
        assert task.cancelled()
        slowest = max(slowest, loop.time() - began)
    assert slowest < 1.5, slowest  # at most the rest of one BLOCK_MS read
