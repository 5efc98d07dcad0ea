"""A whole voice stack for tests: real Redis, the core in-process (seats), a media worker process.

The flow is the shipped `config/flows/12345.toml`, optionally with some values replaced (shorter
timeouts), and its prompts are rendered once per test session.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
import tomli_w

from gateway.config import GatewayConfig, parse_config
from gateway.queue import TicketQueue
from gateway.shell.app import Bound, Gateway
from gateway.ticket import Ticket
from gateway.voice.link import VoiceLink
from peers.flows import FAST, write_flow
from peers.gateway_config import make_raw_config
from peers.sip import free_port, free_port_range
from tests.helpers import Seat, WorkerProcess, stored_ticket_ids


@dataclass
class VoiceStack:
    config: GatewayConfig
    gateway: Gateway
    bound: Bound
    worker: WorkerProcess
    sip: str  # host:port of the media worker
    redis: aioredis.Redis
    recordings: Path

    @property
    def link(self) -> VoiceLink:
        return VoiceLink(self.gateway.queue)

    def dial_uri(self, number: str = "12345") -> str:
        return f"sip:{number}@{self.sip}"

    async def tickets(self) -> list[Ticket]:
        ids = await stored_ticket_ids(self.redis, self.config.redis.key_prefix)
        return [await self.gateway.queue.get(ticket_id) for ticket_id in ids]

    async def wait_for(self, predicate: Any, timeout: float = 20.0, what: str = "condition") -> Any:
        """Poll (the state lives in Redis and in another process) until predicate() is truthy."""
        async with asyncio.timeout(timeout):
            while True:
                result = await predicate()
                if result:
                    return result
                await asyncio.sleep(0.1)

    async def ticket_where(self, check: Any, timeout: float = 20.0) -> Ticket:
        async def found() -> Ticket | None:
            return next((t for t in await self.tickets() if check(t)), None)

        result: Ticket = await self.wait_for(found, timeout)
        return result


@dataclass(frozen=True)
class WorkerFiles:
    """A media worker's config written for a test: the file, the parsed config, where it listens."""

    path: Path
    config: GatewayConfig
    sip: str
    recordings: Path

    def process(self, redis_url: str, worker_id: str = "wtest") -> WorkerProcess:
        return WorkerProcess(str(self.path), redis_url, worker_id, self.sip)


def worker_files(
    tmp_path: Path,
    redis_url: str,
    key_prefix: str,
    prompts_dir: Path,
    agent_uris: dict[str, str] | None = None,
    flow_replacements: dict[str, str] | None = None,
    asr: dict[str, Any] | None = None,
    redis: dict[str, Any] | None = None,
    **voice: Any,
) -> WorkerFiles:
    """The shipped flow (made FAST, with `flow_replacements`) and a gateway config for one worker;
    `voice` overrides [voice] settings (`default_flow=None` removes the default flow), `redis` the
    [redis] ones."""
    flow = write_flow(tmp_path / "flow.toml", {**FAST, **(flow_replacements or {})})
    sip_port = free_port(udp=True, tcp=False)
    recordings = tmp_path / "recordings"
    raw = make_raw_config(key_prefix, redis_url)
    raw["redis"].update(redis or {})
    for agent in raw["agents"]:
        if agent_uris and agent["id"] in agent_uris:
            agent["sip_uri"] = agent_uris[agent["id"]]
    raw["seats"]["offer_timeout"] = 10
    raw["voice"] = {
        "enabled": True,
        "listen": f"127.0.0.1:{sip_port}",
        # Its own RTP block, away from other stacks that may run at the same time on this machine.
        "rtp_port_base": free_port_range(16),
        "flows": [str(flow)],
        "numbers": {"12345": "12345-default"},
        "prompts_dir": str(prompts_dir),
        "recordings_dir": str(recordings),
        "agent_answer_timeout": 5,
        "max_position_announced": 5,
        "worker_timeout": 2,
        "heartbeat_interval": 0.5,
        **{key: value for key, value in voice.items() if value is not None},
    }
    if voice.get("default_flow", "") is None:
        raw["voice"].pop("default_flow", None)
    if asr is not None:
        raw["asr"] = asr
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(raw))
    return WorkerFiles(path, parse_config(raw, tmp_path), f"127.0.0.1:{sip_port}", recordings)


@asynccontextmanager
async def voice_stack(
    tmp_path: Path, redis_url: str, key_prefix: str, prompts_dir: Path, **options: Any
) -> AsyncIterator[VoiceStack]:
    """The core and one media worker process, on the files `worker_files` writes with these
    `options` (agent_uris, flow_replacements, asr, redis, [voice] settings)."""
    files = worker_files(tmp_path, redis_url, key_prefix, prompts_dir, **options)
    worker = files.process(redis_url)
    client = aioredis.Redis.from_url(redis_url)
    gateway = Gateway(files.config, client)
    bound = await gateway.start()
    try:
        await worker.start()
        yield VoiceStack(files.config, gateway, bound, worker, files.sip, client, files.recordings)
    finally:
        await worker.stop()
        await gateway.stop()
        await client.aclose()


async def accepted_then_revoked(bound: Bound) -> tuple[Seat, str, dict[str, Any]]:
    """Agent a1's seat takes the caller's offer and accepts it; when the agent's phone fails, the
    offer is revoked: the seat, the ticket's id and the revocation."""
    seat = await Seat.connect(bound, "a1")
    offer = await seat.expect("offer", 10)
    ticket_id = str(offer["ticket"]["id"])
    await seat.send(type="accept", ticket=ticket_id)
    return seat, ticket_id, await seat.expect("revoked", 10)


async def filed_callback_ticket(client: aioredis.Redis, config: GatewayConfig, key_prefix: str, entry: Path) -> Ticket:
    """Once a worker (another process: polled) filed the spool `entry` of a call that left a voice
    message while Redis was gone, the one ticket stored: that call's callback ticket."""
    async with asyncio.timeout(20):
        while entry.exists():
            await asyncio.sleep(0.1)
    queue = TicketQueue(client, config)
    [ticket] = [await queue.get(ticket_id) for ticket_id in await stored_ticket_ids(client, key_prefix)]
    assert ticket.voice is not None and ticket.message_id == ticket.voice.call_id, "the call's one ticket"
    assert "callback" in ticket.flags and ticket.notes == "回拨原因: voice_message"
    return ticket
