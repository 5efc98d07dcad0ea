"""`hotline-gateway triage` as real processes: one SIGKILLed mid-stream, another started after it,
and every ticket is triaged exactly once; SIGTERM stops one cleanly."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import tomli_w

from gateway.config import GatewayConfig
from gateway.queue import TicketQueue
from gateway.shell.app import Gateway
from gateway.triage.assess import ACTION, ACTOR
from gateway.triage.service import GROUP
from peers.gateway_config import make_raw_config
from tests.conftest import ConfigFactory
from tests.helpers import queued_ticket
from tests.triage.conftest import SHIPPED_SENSITIVE
from tests.triage.test_service import CONTACTS

TICKETS = 300


class TriageProcess:
    def __init__(self, config_path: Path, redis_url: str) -> None:
        self.args = [sys.executable, "-m", "gateway.cli", "--log-level", "WARNING", "triage",
                     "--config", str(config_path), "--redis-url", redis_url]  # fmt: skip
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> str:
        self.process = await asyncio.create_subprocess_exec(*self.args, stdout=asyncio.subprocess.PIPE)
        assert self.process.stdout is not None
        async with asyncio.timeout(30):
            line = (await self.process.stdout.readline()).decode()
        assert line.startswith("triage ready"), line
        return line.split("consumer=")[1].strip()

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 20)


def written_config(tmp_path: Path, redis_url: str, key_prefix: str, catalogue: Path) -> Path:
    triage = {"enabled": True, "catalogue": str(catalogue), "batch": 20, "claim_idle": 0.5, "claim_every": 0.5}
    raw = make_raw_config(key_prefix, redis_url, triage=triage, sensitive=SHIPPED_SENSITIVE)
    path = tmp_path / "gateway.toml"
    path.write_bytes(tomli_w.dumps(raw).encode())
    return path


async def settled(client: aioredis.Redis, stream: str, timeout: float = 60.0) -> None:
    """Until the group has read everything and nothing is pending (its consumers' own state: no
    event tells of a repeat acknowledged without a write, so the group is looked at)."""
    async with asyncio.timeout(timeout):
        while True:
            groups = await client.xinfo_groups(stream)
            group = next(g for g in groups if g["name"].decode() == GROUP)
            if group["pending"] == 0 and group["lag"] == 0:
                return
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_a_triage_process_killed_mid_stream_leaves_every_ticket_triaged_once(
    config: GatewayConfig, redis_client: aioredis.Redis, key_prefix: str, tmp_path: Path, catalogue_path: Path
) -> None:
    assert config.redis.url
    path = written_config(tmp_path, config.redis.url, key_prefix, catalogue_path)
    queue = TicketQueue(redis_client, config)
    news = redis_client.pubsub()
    await news.subscribe(queue.keys.triage_news)
    first = TriageProcess(path, config.redis.url)
    await first.start()
    ids = [(await queue.intake(queued_ticket(f"k{n}", text=CONTACTS[n % len(CONTACTS)][0]), "test")).ticket_id
           for n in range(TICKETS)]  # fmt: skip
    heard = 0
    async with asyncio.timeout(30):
        while heard < TICKETS // 5:  # well under way: a fifth triaged
            heard += await news.get_message(ignore_subscribe_messages=True, timeout=5.0) is not None
    first.kill()  # SIGKILL: no goodbye, a batch read and not acknowledged
    assert await asyncio.wait_for(first.process.wait(), 10) == -9  # type: ignore[union-attr]
    second = TriageProcess(path, config.redis.url)
    await second.start()
    await settled(redis_client, queue.keys.created)
    assert await second.stop() == 0, "SIGTERM: a clean stop"
    await news.aclose()  # type: ignore[no-untyped-call]
    for ticket_id in ids:
        ticket = await queue.get(ticket_id)
        lines = [entry for entry in ticket.history if (entry.actor, entry.action) == (ACTOR, ACTION)]
        assert len(lines) == 1 and len(ticket.suggestions) == 3, ticket_id


def test_with_triage_out_of_the_core_the_gateway_runs_no_triage_loop(
    config_factory: ConfigFactory, catalogue_path: Path
) -> None:
    triage = {"enabled": True, "catalogue": str(catalogue_path)}
    inside = Gateway(config_factory(triage=triage), aioredis.Redis())
    outside = Gateway(config_factory(triage={**triage, "in_core": False}), aioredis.Redis())
    assert inside.triage is not None and outside.triage is None
    assert "triage" in inside.report().services and "triage" not in outside.report().services
