"""Several hosts: two `hotline-gateway run` processes share one Redis and one Kamailio dispatcher list,
each with its own group of media workers on its own address (127.0.0.2 and 127.0.0.3 stand for two
hosts: all of 127.0.0.0/8 is local on Linux).

- host A: the front (Kamailio on 127.0.0.1, the trunk's and the callers' address), its workers a-w1,
  a-w2 on 127.0.0.2, and `[sipfront] workers` listing all four workers explicitly;
- host B: `[sipfront] enabled = false`, workers b-w1, b-w2 on 127.0.0.3, its HTTP and seats on
  127.0.0.3 too.

Real redis-server, Kamailio, four worker processes (children of the two `run`s) and SIPp callers
with speech RTP. Marked slow.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis
import tomli_w

from gateway.config import GatewayConfig, load_config
from gateway.queue import TicketQueue
from gateway.shell.embedded_redis import EmbeddedRedis
from gateway.sipfront.kamailio import front_paths
from gateway.sipfront.rpc import FrontRpc, Target
from gateway.sipfront.status import worker_rows
from gateway.ticket import Ticket
from peers import audio
from peers.sip import Peers, dtmf_scenario, free_port, free_port_range
from tests.helpers import GatewayProcess, WorkerProcess, stored_ticket_ids
from tests.sipfront.front_stack import StackArgs, raw_front_config

pytestmark = pytest.mark.slow

A_HOST, B_HOST = "127.0.0.2", "127.0.0.3"
CALLERS = 8  # 4 workers x 2 callers (calls_per_worker = 4 legs)
HOLD_MS = 20_000  # after the digit: the callers on live workers hold while the kill plays out

T = TypeVar("T")


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _free_range(count: int, host: str) -> int:
    """`count` consecutive UDP ports free on 127.0.0.1 (free_port_range's check) and on `host`."""
    for _ in range(50):
        base = free_port_range(count, even=False)
        if all(_bindable(host, port) for port in range(base, base + count)):
            return base
    raise AssertionError(f"no {count} consecutive UDP ports free on {host}")


def _write_host(
    directory: Path, redis_url: str, key_prefix: str, prompts_dir: Path, run_dir: Path, front_port: int, *,
    host: str, prefix: str, base: int, front: dict[str, Any],
) -> Path:  # fmt: skip
    directory.mkdir()
    raw = raw_front_config(
        directory, redis_url, key_prefix, prompts_dir, run_dir, front_port, workers=2, calls_per_worker=4,
        trunks=["127.0.0.1/32"], agent_phones={}, worker_base=base, front=front,
    )  # fmt: skip
    raw["voice"] |= {"listen": f"{host}:{base}", "worker_id_prefix": prefix}
    raw["asr"] = {"enabled": False, "navigation_enabled": False}
    if not raw["sipfront"]["enabled"]:
        raw["http"]["listen"] = f"{host}:0"
        raw["seats"]["listen"] = f"{host}:0"
    path = directory / "gateway.toml"
    path.write_text(tomli_w.dumps(raw))
    return path


async def _until(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    last: T | None = None
    try:
        async with asyncio.timeout(timeout):
            while not (last := await check()):
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"never {what} within {timeout} s (last seen: {last!r})") from None
    return last


def _sdp_answers(message_log: Path) -> dict[str, tuple[str, str, int]]:
    """The 200 OKs to INVITE that SIPp received (-trace_msg): Call-ID -> (the Contact's host:port,
    the SDP's c= address, its m=audio port)."""
    answers = {}
    for block in message_log.read_text(errors="replace").split("-----------------------------------------------"):
        if "message received" not in block or "SIP/2.0 200" not in block or not re.search(r"CSeq:\s*\d+ INVITE", block):
            continue
        call_id = re.search(r"^Call-ID:\s*(\S+)", block, re.M | re.I)
        contact = re.search(r"^Contact:.*?sips?:[^@>;]*@([0-9.]+:\d+)", block, re.M | re.I)
        connection = re.search(r"^c=IN IP4 (\S+)", block, re.M)
        media = re.search(r"^m=audio (\d+)", block, re.M)
        assert call_id and contact and connection and media, block
        answers[call_id[1]] = (contact[1], connection[1], int(media[1]))
    return answers


def _udp_bound_exactly(host: str, port: int) -> bool:
    """A UDP socket bound to host:port itself (not to 0.0.0.0), from /proc/net/udp."""
    wanted = f"{socket.htonl(int.from_bytes(socket.inet_aton(host), 'big')):08X}:{port:04X}"
    lines = Path("/proc/net/udp").read_text().splitlines()[1:]
    return any(line.split()[1] == wanted for line in lines)


class Hotline:
    """What the test reads: the shared Redis (heartbeats, tickets) and host A's Kamailio."""

    def __init__(self, config: GatewayConfig, client: aioredis.Redis) -> None:
        self.config = config
        self.redis = client
        self.queue = TicketQueue(client, config)
        self.rpc = FrontRpc(config.sipfront.kamcmd, front_paths(config).ctl_socket)

    async def beats(self) -> dict[str, dict[str, str]]:
        """The live heartbeats, by worker id."""
        return {
            row.worker_id: row.info for row in await worker_rows(self.redis, self.config.redis.key_prefix) if row.alive
        }

    async def targets(self) -> dict[str, Target]:
        return {target.address: target for target in await self.rpc.dispatcher()}

    async def tickets(self) -> list[Ticket]:
        ids = await stored_ticket_ids(self.redis, self.config.redis.key_prefix)
        return [await self.queue.get(ticket_id) for ticket_id in ids]

    async def tickets_where(self, check: Callable[[Ticket], bool], n: int) -> list[Ticket] | None:
        found = [t for t in await self.tickets() if check(t)]
        return found if len(found) >= n else None


async def test_two_hosts_worker_groups_on_their_own_addresses_share_the_front_and_redis(
    stack_args: StackArgs, callers: Peers, pcap_playback: None
) -> None:
    tmp_path, redis_url = stack_args["tmp_path"], stack_args["redis_url"]
    key_prefix, prompts_dir, run_dir = stack_args["key_prefix"], stack_args["prompts_dir"], stack_args["run_dir"]
    front_port = free_port(udp=True, tcp=False)
    a_base, b_base = _free_range(2, A_HOST), _free_range(2, B_HOST)
    sips = {
        "a-w1": f"{A_HOST}:{a_base}", "a-w2": f"{A_HOST}:{a_base + 1}",
        "b-w1": f"{B_HOST}:{b_base}", "b-w2": f"{B_HOST}:{b_base + 1}",
    }  # fmt: skip
    common = (redis_url, key_prefix, prompts_dir, run_dir, front_port)
    path_a = _write_host(tmp_path / "a", *common, host=A_HOST, prefix="a-", base=a_base,
                         front={"workers": list(sips.values())})  # fmt: skip
    path_b = _write_host(tmp_path / "b", *common, host=B_HOST, prefix="b-", base=b_base, front={"enabled": False})
    config = load_config(path_a)
    front = config.sipfront.listen
    host_a, host_b = GatewayProcess(str(path_a), redis_url), GatewayProcess(str(path_b), redis_url)
    client = aioredis.Redis.from_url(redis_url)
    hotline = Hotline(config, client)
    began = time.monotonic()
    try:
        bound_a, bound_b = await asyncio.gather(host_a.start(30), host_b.start(30))
        assert bound_b.http[0] == B_HOST and bound_b.seats[0] == B_HOST, bound_b
        assert {bound_a.http[1], bound_a.seats[1]}.isdisjoint({bound_b.http[1], bound_b.seats[1]})

        # Every worker beats into the shared Redis with its own address; Kamailio probes all four.
        beats = await _until(lambda: _all_beating(hotline, set(sips)), 30, "four heartbeats")
        assert {worker_id: info["sip"] for worker_id, info in beats.items()} == sips
        await _until(lambda: _targets_if(hotline, lambda t: len(t) == 4 and all(x.active for x in t.values())),
                     15, "four active destinations")  # fmt: skip
        print(f"\nboth hosts up, four workers beating and active in Kamailio: {time.monotonic() - began:.1f} s")

        # 9 callers at once: each speaks, presses 0 (queued: no agent logged in) and holds.
        scenario = dtmf_scenario("0", pause_ms_before=1000, hold_ms_after=HOLD_MS, out_dir=tmp_path)
        first = await callers.sipp(scenario, target=front, service="12345", calls=CALLERS + 1,
                                 concurrency=CALLERS + 1, rate=20, trace_messages=True)  # fmt: skip
        targets = await _until(lambda: _targets_if(hotline, lambda t: sum(x.load for x in t.values()) == CALLERS),
                               15, f"{CALLERS} calls up")  # fmt: skip
        assert {address: t.load for address, t in targets.items()} == dict.fromkeys(sips.values(), 2), targets
        beats = await _until(lambda: _beats_if(hotline, lambda b: all(i["callers"] == "2" for i in b.values())),
                             5, "2 callers in every heartbeat")  # fmt: skip
        queued = await _until(lambda: hotline.tickets_where(lambda t: t.status == "queued", CALLERS), 15,
                              f"{CALLERS} tickets queued")  # fmt: skip
        assert Counter(t.voice.worker for t in queued if t.voice) == dict.fromkeys(sips, 2)
        for ticket in queued:
            assert ticket.voice is not None
            host_dir = tmp_path / ("a" if ticket.voice.worker.startswith("a-") else "b") / "recordings"
            recording = Path(ticket.attachments[0].path or "")
            assert recording.is_relative_to(host_dir) and recording.exists(), (ticket.voice.worker, recording)

        # The SDP answers: each worker puts its own address in c= and has its RTP bound there.
        answers = _sdp_answers(first.workdir / f"{first.scenario.stem}_messages.log")
        assert Counter(contact for contact, _, _ in answers.values()) == dict.fromkeys(sips.values(), 2), answers
        for contact, connection, rtp_port in answers.values():
            host = contact.split(":")[0]
            assert connection == host, f"the worker at {contact} announced c=IN IP4 {connection}"
            assert _udp_bound_exactly(host, rtp_port), f"RTP {host}:{rtp_port} is bound on the worker's own address"
        print("SDP answers: " + ", ".join(sorted({f"{c} -> c={a}" for c, a, _ in answers.values()})))

        # SIGKILL b-w2 mid-call: no BYE from it. The cores settle its calls; Kamailio ends them.
        victims = {t.id for t in queued if t.voice and t.voice.worker == "b-w2"}
        old_pid = int(beats["b-w2"]["pid"])
        lapses_ms = await client.zscore(f"{key_prefix}:workers", "b-w2")  # its last heartbeat's expiry
        assert lapses_ms is not None
        killed_at = time.monotonic()
        os.kill(old_pid, signal.SIGKILL)
        settled = await _until(
            lambda: hotline.tickets_where(lambda t: t.id in victims and t.status == "abandoned", 2),
            15,
            "the dead worker's two tickets abandoned",
        )
        settle_s = time.monotonic() - killed_at
        seconds, micros = await client.time()
        # Restarted before its heartbeat lapsed, the worker settles its predecessor itself (its own
        # heartbeat would hide the death); otherwise a core's reaper does.
        by = "the restarted worker" if seconds * 1000 + micros // 1000 < lapses_ms else "a core"
        assert all(t.history[-1].detail == {"reason": "worker_died"} for t in settled), settled
        callbacks = await _until(lambda: hotline.tickets_where(lambda t: "callback" in t.flags, 2), 5, "2 callbacks")
        assert {t.message_id for t in callbacks} == {f"{t.message_id}-callback" for t in settled}
        for ticket in settled:
            assert audio.duration(Path(ticket.attachments[0].path or "")) > 0.5, "the recording so far is kept"
        await _until(lambda: _targets_if(hotline, lambda t: t[sips["b-w2"]].load == 0), 10, "b-w2's load released")
        released_s = time.monotonic() - killed_at
        others = await hotline.tickets()
        assert all(t.status == "queued" for t in others if t.id not in victims and "callback" not in t.flags)

        # Host B's `run` restarts b-w2 (same id, same address: its guard lets it in); new calls
        # flow to it, the only worker with room.
        beats = await _until(lambda: _beats_if(hotline, lambda b: _pid(b, "b-w2") not in ("", str(old_pid))),
                             20, "b-w2 restarted")  # fmt: skip
        restarted_s = time.monotonic() - killed_at
        assert beats["b-w2"]["sip"] == sips["b-w2"]
        await _until(lambda: _targets_if(hotline, lambda t: t[sips["b-w2"]].active), 10, "b-w2 active again")
        back_s = time.monotonic() - killed_at
        more = dtmf_scenario("0", pause_ms_before=1000, hold_ms_after=1500, out_dir=tmp_path)
        second = await callers.sipp(more, target=front, service="12345", calls=2, concurrency=2, rate=10)
        result = await second.wait(20)
        assert result.successful == 2, str(result)
        known = {t.id for t in others}
        new = await _until(lambda: hotline.tickets_where(lambda t: t.id not in known and "callback" not in t.flags, 2),
                           10, "the new calls' tickets")  # fmt: skip
        assert [t.voice.worker for t in new if t.voice] == ["b-w2", "b-w2"], new
        print(
            f"b-w2 SIGKILLed: its 2 tickets settled by {by} after {settle_s:.2f} s, its load released (BYE from "
            f"Kamailio) after {released_s:.2f} s, restarted beating after {restarted_s:.2f} s, active in "
            f"Kamailio after {back_s:.2f} s"
        )

        # The first callers: 6 hung up themselves, the dead worker's 2 got Kamailio's BYE mid-scenario
        # (an unexpected message to SIPp), the 9th got 503 from Kamailio.
        result = await first.wait(40)
        print(result)
        assert (result.successful, result.failed) == (CALLERS - 2, 3), str(result)
        # SIPp counts the 503 as an unexpected message too.
        assert result.failure_reasons == {"FailedUnexpectedMessage": 3}, str(result)
        assert result.errors.count("unexpected BYE") == 2, result.errors
        assert dict(result.statuses).get(503) == 1 and dict(result.statuses).get(200) == CALLERS, str(result)
        await _until(lambda: _targets_if(hotline, lambda t: all(x.load == 0 for x in t.values())), 10, "loads at 0")
    finally:
        codes = await asyncio.gather(host_a.stop(), host_b.stop())
        await client.aclose()
    assert list(codes) == [0, 0]
    print(f"whole test: {time.monotonic() - began:.1f} s")


def _pid(beats: dict[str, dict[str, str]], worker_id: str) -> str:
    return beats.get(worker_id, {}).get("pid", "")


async def _all_beating(hotline: Hotline, ids: set[str]) -> dict[str, dict[str, str]] | None:
    beats = await hotline.beats()
    return beats if set(beats) == ids else None


async def _targets_if(hotline: Hotline, check: Callable[[dict[str, Target]], bool]) -> dict[str, Target] | None:
    targets = await hotline.targets()
    return targets if check(targets) else None


async def _beats_if(
    hotline: Hotline, check: Callable[[dict[str, dict[str, str]]], bool]
) -> dict[str, dict[str, str]] | None:
    beats = await hotline.beats()
    return beats if check(beats) else None


async def test_a_worker_whose_id_beats_from_another_host_refuses_to_start_and_the_first_keeps_it(
    tmp_path: Path, redis_server: EmbeddedRedis, key_prefix: str, prompts_dir: Path, run_dir: Path
) -> None:
    # Two hosts both left at the default prefix: both would name their first worker w1.
    redis_url: str = redis_server.url
    a_base, b_base = _free_range(1, A_HOST), _free_range(1, B_HOST)
    path = _write_host(tmp_path / "h", redis_url, key_prefix, prompts_dir, run_dir, 5060, host=A_HOST, prefix="",
                       base=a_base, front={"enabled": False})  # fmt: skip
    client = aioredis.Redis.from_url(redis_url)
    first = WorkerProcess(str(path), redis_url, "w1", f"{A_HOST}:{a_base}")
    moved = WorkerProcess(str(path), redis_url, "w1", f"{B_HOST}:{b_base}")
    try:
        await first.start()
        second = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "media-worker", "--config", str(path), "--redis-url", redis_url,
            "--id", "w1", "--listen", f"{B_HOST}:{b_base}",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(second.communicate(), 30)
        message = err.decode(errors="replace")
        assert second.returncode == 2, message
        assert f"media worker id 'w1' is in use by a live worker at {A_HOST}:{a_base}" in message, message
        assert "voice.worker_id_prefix" in message, message
        assert b"media-worker ready" not in out
        assert not _udp_bound_exactly(B_HOST, b_base), "the refused worker never bound its SIP port"
        print(f"\n{message.strip()}")
        info = await client.hgetall(f"{key_prefix}:worker:w1")
        assert info[b"sip"] == f"{A_HOST}:{a_base}".encode(), "the first worker keeps its id and heartbeat"
        assert await client.zscore(f"{key_prefix}:workers", "w1") is not None
        # Once the first one stops (its heartbeat retired), the id is free for the other address.
        assert await first.stop() == 0
        await moved.start()
        assert (await client.hget(f"{key_prefix}:worker:w1", "sip")) == f"{B_HOST}:{b_base}".encode()
        assert await moved.stop() == 0
    finally:
        for process in (first, moved):
            process.kill()
            await process.stop()
        await client.aclose()
