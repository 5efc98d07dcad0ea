"""`hotline-gateway run` killed with SIGKILL while calls are up: nothing of it remains within a few
seconds (embedded Redis, Kamailio, media workers, their speech recognizers), and the next `run` on the
same config starts clean and answers calls. A worker orphaned this way once kept its SIP port, logged
thousands of tracebacks and answered the next run's Redis under the new worker's id."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import tomli_w

from gateway.config import load_config
from gateway.shell.preflight import Address, in_use
from gateway.sipfront.status import gather
from peers.sip import Peers, free_port, free_port_range, uac_scenario
from tests.helpers import GatewayProcess
from tests.sipfront.front_stack import raw_front_config

pytestmark = pytest.mark.slow


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in _children(todo.pop()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")[:100]
    except OSError:
        return "?"


def _config(tmp_path: Path, prompts_dir: Path, run_dir: Path, redis_port: int) -> tuple[Path, dict[str, object]]:
    front_port = free_port(udp=True, tcp=False)
    raw = raw_front_config(
        tmp_path, "unused", "life", prompts_dir, run_dir, front_port,
        workers=1, calls_per_worker=4, trunks=["127.0.0.1/32"], agent_phones={},
        worker_base=free_port_range(1, even=False), front={},
        asr={"enabled": True, "engine": "pocketsphinx", "pool": {"workers": 1, "streams_per_worker": 2}},
    )  # fmt: skip
    raw["sipfront"]["phones"] = {}
    raw["redis"] = {"key_prefix": "life", "embedded": {"port": redis_port, "dir": str(tmp_path / "redis")}}
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(raw))
    return path, raw


async def _serving(path: Path, redis_url: str, run_pid: int, timeout: float = 40.0) -> None:
    """Until the run's own worker (a child of `run_pid`, not a heartbeat left from before) beats and
    Kamailio routes to it."""
    config = load_config(path, environ={})
    client = aioredis.Redis.from_url(redis_url)
    try:
        async with asyncio.timeout(timeout):
            while True:
                report = await gather(config, client)
                ours = descendants(run_pid)
                live = [row for row in report.workers if row.alive and int(row.info.get("pid", "0")) in ours]
                if live and report.targets and all(t.flags.startswith("A") for t in report.targets):
                    return
                await asyncio.sleep(0.2)
    finally:
        await client.aclose()


async def _queued_voice_tickets(redis_url: str) -> int:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return sum([1 async for _ in client.scan_iter(match="life:t:*", _type="hash")])
    finally:
        await client.aclose()


async def test_a_run_killed_with_calls_up_leaves_nothing_and_the_next_run_starts_clean(
    tmp_path: Path,
    prompts_dir: Path,
    run_dir: Path,
    peers: Peers,
    kamailio_available: None,
    sipp_available: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    redis_port = free_port(udp=False, tcp=True)
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    path, raw = _config(tmp_path, prompts_dir, run_dir, redis_port)
    front = str(raw["sipfront"]["listen"])  # type: ignore[index]
    front_host, front_port = front.rsplit(":", 1)
    monkeypatch.delenv("REDIS_URL", raising=False)  # the run's own embedded Redis

    async with started(path) as first:
        assert first.process is not None
        await _serving(path, redis_url, first.process.pid)
        held = uac_scenario(tmp_path, audio_pcap=None, pause_ms_before=30_000, hold_ms_after=100)
        # One caller after the other: the second dials once the first is queued, not while the
        # worker is still starting the first call's recognizers (under CI load a probe of the front
        # can time out then, and a caller arriving in that second gets the front's 503).
        callers = []
        for up in (1, 2):
            callers.append(await peers.sipp(held, target=front, service="12345", calls=1, concurrency=1, rate=10))
            async with asyncio.timeout(30):
                while await _queued_voice_tickets(redis_url) < up:
                    await asyncio.sleep(0.2)
        tree = descendants(first.process.pid)
        commands = {pid: _command(pid) for pid in tree}
        assert any("redis-server" in c for c in commands.values()), commands
        assert any("kamailio" in c for c in commands.values()), commands
        assert any("media-worker" in c for c in commands.values()), commands
        assert any("multiprocessing" in c for c in commands.values()), commands  # the workers' recognizers

        first.process.send_signal(signal.SIGKILL)
        await first.process.wait()
    async with asyncio.timeout(15):
        while left := [pid for pid in tree if alive(pid)]:
            await asyncio.sleep(0.1)
    assert not left, {pid: commands[pid] for pid in left}
    addresses = [
        Address("tcp", "127.0.0.1", redis_port, "embedded Redis", "redis.embedded.port"),
        Address("udp", front_host, int(front_port), "SIP front", "sipfront.listen"),
    ]
    assert not [str(a) for a in addresses if in_use(a)]
    for held_caller in callers:
        await held_caller.close()  # the held callers lost their call (no BYE can come: everything is gone)

    async with started(path) as second:
        assert second.process is not None
        await _serving(path, redis_url, second.process.pid)
        short = uac_scenario(tmp_path, audio_pcap=None, pause_ms_before=1500, hold_ms_after=100)
        caller = await peers.sipp(short, target=front, service="12345", calls=1, concurrency=1, rate=10)
        result = await caller.wait(30)
        assert result.successful == 1, str(result)
        assert await second.stop() == 0


@asynccontextmanager
async def started(path: Path) -> AsyncIterator[GatewayProcess]:
    """A `run` that is stopped however the test ends (a failed test must not leave one behind)."""
    gateway = GatewayProcess(str(path))
    try:
        await gateway.start(60)
        yield gateway
    finally:
        if gateway.process is not None and gateway.process.returncode is None:
            await gateway.stop()
