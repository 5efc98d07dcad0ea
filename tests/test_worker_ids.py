"""Worker ids are keys in the Redis that every host shares: a worker does not start under an id that a
live worker at another address beats with, and a worker restarted at its own address settles the
calls its killed predecessor left (real Redis, no SIP)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import tomli_w

from gateway.config import GatewayConfig
from gateway.errors import ConfigError
from gateway.queue import TicketQueue
from gateway.shell.embedded_redis import EmbeddedRedis
from gateway.ticket import Ticket, VoiceCall, new_ticket_id, utcnow
from gateway.voice.link import VoiceLink
from tests.redis_typed import stream_entries
from tests.sipfront.front_stack import raw_front_config

A_SIP = "127.0.0.2:5070"
B_SIP = "127.0.0.3:5070"
HERE = "host-a"  # claim_id takes this machine's name by default; the tests name their hosts


@pytest.fixture
async def link(config: GatewayConfig, redis_client: aioredis.Redis) -> VoiceLink:
    queue = TicketQueue(redis_client, config)
    await queue.ensure_groups()
    return VoiceLink(queue)


async def _beat(link: VoiceLink, worker_id: str, sip: str, pid: int, ttl: float = 5.0, host: str = HERE) -> None:
    await link.heartbeat(worker_id, ttl, {"sip": sip, "host": host, "pid": str(pid), "callers": "1"})


async def _waiting_call(link: VoiceLink, worker_id: str) -> Ticket:
    now = utcnow()
    ticket = Ticket(
        id=new_ticket_id(now), channel="voice", message_id=f"call-{worker_id}", received_at=now, queue="general",
        voice=VoiceCall(worker=worker_id, call_id=f"call-{worker_id}"),
    )  # fmt: skip
    await link.queue.intake(ticket, f"worker:{worker_id}")
    await link.track(worker_id, ticket.id)
    return ticket


def _gone_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


async def _dead_entries(link: VoiceLink) -> list[dict[str, str]]:
    return [fields for _, fields in stream_entries(await link.redis.xrange(link.keys.dead_workers))]


async def test_an_id_beating_from_another_address_is_refused_naming_the_id_the_address_and_the_prefix(
    link: VoiceLink,
) -> None:
    await _beat(link, "w1", B_SIP, pid=1, host="host-b")
    with pytest.raises(ConfigError) as raised:
        await link.claim_id("w1", A_SIP, callback_priority=0, host=HERE)
    message = str(raised.value)
    assert f"'w1' is in use by a live worker at {B_SIP} on host host-b (this one: {A_SIP} on host {HERE})" in message
    assert "voice.worker_id_prefix" in message, message
    # Nothing of the live worker was touched.
    assert (await link.live_workers())["w1"]["sip"] == B_SIP
    assert await _dead_entries(link) == []


async def test_the_same_address_on_another_host_is_refused_too_and_its_calls_are_left_alone(
    link: VoiceLink,
) -> None:
    # Two hosts both left at listen 127.0.0.1:5070 and prefix "": the same id and the same address.
    await _beat(link, "w1", A_SIP, pid=_gone_pid(), host="host-b")
    ticket = await _waiting_call(link, "w1")
    with pytest.raises(ConfigError, match="on host host-b"):
        await link.claim_id("w1", A_SIP, callback_priority=0, host=HERE)
    assert (await link.queue.get(ticket.id)).status == "queued", "another host's pid says nothing here"
    assert await _dead_entries(link) == []


async def test_the_first_heartbeat_is_refused_too_when_another_address_claimed_the_id_meanwhile(
    link: VoiceLink,
) -> None:
    # Two hosts starting w1 at once both pass claim_id's look; the first beat decides, atomically.
    await link.claim("w1", 5.0, {"sip": B_SIP, "host": "host-b", "pid": "7"})
    with pytest.raises(ConfigError, match=r"voice\.worker_id_prefix"):
        await link.claim("w1", 5.0, {"sip": A_SIP, "host": HERE, "pid": "8"})
    with pytest.raises(ConfigError, match="on host host-b"):
        await link.claim("w1", 5.0, {"sip": B_SIP, "host": HERE, "pid": "8"})
    assert (await link.live_workers())["w1"] == {"sip": B_SIP, "host": "host-b", "pid": "7"}
    # The same address on the same host may beat again (a restart), and other ids are free.
    await link.claim("w1", 5.0, {"sip": B_SIP, "host": "host-b", "pid": "9"})
    await link.claim("a-w1", 5.0, {"sip": A_SIP, "host": HERE, "pid": "8"})
    assert {w: i["sip"] for w, i in (await link.live_workers()).items()} == {"w1": B_SIP, "a-w1": A_SIP}


async def test_an_id_whose_heartbeat_lapsed_is_free_and_the_dead_workers_calls_are_settled_first(
    link: VoiceLink,
) -> None:
    await _beat(link, "w1", B_SIP, pid=1, ttl=0.05, host="host-b")
    ticket = await _waiting_call(link, "w1")
    await asyncio.sleep(0.1)
    await link.claim_id("w1", A_SIP, callback_priority=0, host=HERE)
    settled = await link.queue.get(ticket.id)
    assert settled.status == "abandoned" and settled.history[-1].detail == {"reason": "worker_died"}
    assert await _dead_entries(link) == [{"worker": "w1", "sip": B_SIP}]


async def test_a_restart_at_the_same_address_settles_the_killed_predecessors_calls(link: VoiceLink) -> None:
    # Killed, and started again before its heartbeat lapsed: the new heartbeat would hide the death.
    await _beat(link, "w1", A_SIP, pid=_gone_pid())
    ticket = await _waiting_call(link, "w1")
    await link.claim_id("w1", A_SIP, callback_priority=0, host=HERE)
    settled = await link.queue.get(ticket.id)
    assert settled.status == "abandoned" and settled.history[-1].detail == {"reason": "worker_died"}
    # The front is asked to end its calls (BYE to the caller), before the new worker binds its SIP.
    assert await _dead_entries(link) == [{"worker": "w1", "sip": A_SIP}]
    assert "w1" not in await link.live_workers()


async def test_a_live_process_at_the_same_address_is_left_alone(link: VoiceLink) -> None:
    # Its twin (same id, same address, alive) keeps its calls; the new one then fails to bind.
    twin = subprocess.Popen(["sleep", "30"])
    try:
        await _beat(link, "w1", A_SIP, pid=twin.pid)
        ticket = await _waiting_call(link, "w1")
        await link.claim_id("w1", A_SIP, callback_priority=0, host=HERE)
        assert (await link.queue.get(ticket.id)).status == "queued"
        assert await _dead_entries(link) == []
    finally:
        twin.kill()
        twin.wait()


async def test_media_worker_with_an_id_in_use_elsewhere_exits_2_before_binding_and_retires_nothing(
    tmp_path: Path, redis_server: EmbeddedRedis, key_prefix: str, link: VoiceLink
) -> None:
    redis_url: str = redis_server.url
    raw = raw_front_config(
        tmp_path, redis_url, key_prefix, tmp_path, tmp_path, 5060, workers=1, calls_per_worker=4,
        trunks=["127.0.0.1/32"], agent_phones={}, worker_base=5070, front={"enabled": False},
    )  # fmt: skip
    raw["voice"] |= {"listen": A_SIP, "worker_id_prefix": "a-"}
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(raw))
    await _beat(link, "a-w1", B_SIP, pid=1, ttl=30, host="host-b")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "media-worker", "--config", str(path), "--redis-url", redis_url,
        "--id", "a-w1", "--listen", A_SIP,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 2, (out, err)
    message = err.decode()
    assert "media worker id 'a-w1' is in use by a live worker at 127.0.0.3:5070 on host host-b" in message, message
    assert "voice.worker_id_prefix" in message, message
    assert b"media-worker ready" not in out
    assert (await link.live_workers())["a-w1"]["sip"] == B_SIP, "the other host's heartbeat is intact"
