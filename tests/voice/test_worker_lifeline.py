"""A real media worker that loses its Redis or its supervisor: one line each, no caller cut off.

Before, a worker whose Redis stopped ran on and wrote ~2,200 traceback lines in 20 s (`inbox read
failed`, `heartbeat failed`); then it hung up its callers after `[voice] worker_timeout`, whatever
they were doing. Now it drains (gateway/voice/lifeline.py): no new calls, its callers finish, what
they leave waits in its spool, then it exits. The bound is 2 s in these tests; the worker's log is
its stderr, which it inherits from the test (pytest captures it). Marked slow.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys
import textwrap
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from gateway.shell.embedded_redis import EmbeddedRedis
from peers import audio
from peers.sip import free_port_range
from tests.voice.sip_wire import SipWire
from tests.voice.voice_stack import filed_callback_ticket, worker_files

pytestmark = pytest.mark.slow

BOUND = 2.0  # worker_timeout in worker_files
SHUTDOWN = 15.0  # what a worker may take after its decision: BYEs answered, PJSIP destroyed
MESSAGE = {"max_seconds = 120": "max_seconds = 3"}  # voice messages of 3 s: a silent caller's flow is short
FLOW_SECONDS = 60.0  # a silent caller's whole flow at the tests' speaking rate, with room to spare


def worker_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ [A-Z]+ ", line)]


async def test_a_worker_whose_redis_stops_lets_its_caller_finish_then_exits_and_its_spool_is_filed_once(
    tmp_path: Path, own_redis: EmbeddedRedis, key_prefix: str, prompts_dir: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    files = worker_files(tmp_path, own_redis.url, key_prefix, prompts_dir, flow_replacements=MESSAGE)
    worker = files.process(own_redis.url)
    sip = await SipWire.open(files.sip)
    try:
        await worker.start()
        call = await sip.call("12345", free_port_range(2))
        capfd.readouterr()  # the log so far: start-up
        own_redis.stop()
        # The silent caller walks the flow: the menu twice, the queue (refused: Redis is gone), the
        # apology, a 3 s voice message, the goodbye; only then the worker's BYE.
        bye = await sip.request("BYE", call.call_id, FLOW_SECONDS)
        sip.reply(bye)
        assert worker.process is not None
        status = await asyncio.wait_for(worker.process.wait(), SHUTDOWN)
    finally:
        sip.close()
        worker.kill()
    assert status == 1, "exit 1: a supervisor starts it again, and it answers once Redis is back"
    log = capfd.readouterr().err
    about_redis = [line for line in worker_lines(log) if "redis" in line.lower()]
    assert len(about_redis) == 2, log[-3000:]  # taking no new calls; then stopping
    lost = re.search(r"redis unreachable for ([\d.]+) s", about_redis[0])
    assert lost is not None, about_redis[0]
    lost_for = float(lost[1])
    assert lost_for >= BOUND and "taking no new calls; 1 call(s) may finish within 63 s" in about_redis[0]
    assert "stopping with 0 call(s)" in about_redis[1], "the caller was not cut off"
    assert "Traceback" not in log, log[-3000:]
    [entry] = (files.recordings / "spool").glob("*.json")  # written before the worker exited

    own_redis.start()  # the same data as before it stopped
    again = files.process(own_redis.url)
    client = aioredis.Redis.from_url(own_redis.url)
    try:
        await again.start()  # a new worker files what its predecessor kept
        ticket = await filed_callback_ticket(client, files.config, key_prefix, entry)
    finally:
        await again.stop()
        await client.aclose()
    message = next(Path(a.path or "") for a in ticket.attachments if (a.path or "").endswith("-message.wav"))
    assert audio.duration(message) >= 2.5, "the whole 3 s message was recorded"


# The worker's parent: starts it, prints its pid, waits. Killed, it leaves the worker to init.
PARENT = textwrap.dedent(
    """
    import subprocess, sys
    worker = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--log-level", "INFO", *sys.argv[1:]])
    print(worker.pid, flush=True)
    worker.wait()
    """
)


def gone(pid: int) -> bool:
    """Exited (a zombie waiting for whoever adopted it counts)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state == "Z"


async def test_a_worker_whose_supervisor_dies_stops_with_one_line(
    tmp_path: Path,
    redis_server: EmbeddedRedis,
    key_prefix: str,
    prompts_dir: Path,
    capfd: pytest.CaptureFixture[str],
) -> None:
    files = worker_files(tmp_path, redis_server.url, key_prefix, prompts_dir)
    args = ["media-worker", "--config", str(files.path), "--redis-url", redis_server.url, "--id", "wtest"]
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, *args, "--listen", files.sip, stdout=asyncio.subprocess.PIPE
    )
    assert parent.stdout is not None
    pid = 0
    try:
        async with asyncio.timeout(30):
            pid = int(await parent.stdout.readline())
            while not (await parent.stdout.readline()).startswith(b"media-worker ready"):
                pass
        capfd.readouterr()
        parent.kill()  # SIGKILL: no chance to stop its child
        await parent.wait()
        async with asyncio.timeout(SHUTDOWN):
            while not gone(pid):
                await asyncio.sleep(0.1)  # not our child: nothing to await
    finally:
        if pid and not gone(pid):
            os.kill(pid, signal.SIGKILL)
    log = capfd.readouterr().err
    stopping = [line for line in worker_lines(log) if "stopping" in line]
    assert len(stopping) == 1 and f"its supervisor (pid {parent.pid}) is gone" in stopping[0], log[-3000:]
    assert "Traceback" not in log, log[-3000:]


async def test_a_worker_whose_sip_port_is_taken_exits_2_naming_the_address_and_its_holder(
    tmp_path: Path, redis_server: EmbeddedRedis, key_prefix: str, prompts_dir: Path
) -> None:
    files = worker_files(tmp_path, redis_server.url, key_prefix, prompts_dir)
    host, port = files.sip.rsplit(":", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as squatter:
        squatter.bind((host, int(port)))  # this test's own process holds the worker's SIP port
        worker = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "--log-level", "INFO", "media-worker", "--config", str(files.path),
            "--redis-url", redis_server.url, "--id", "wtest", "--listen", files.sip,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(worker.communicate(), 60)
    assert worker.returncode == 2, "a supervisor does not restart exit 2: it would only crash-loop"
    log = err.decode(errors="replace")
    said = [line for line in log.splitlines() if "already in use" in line]
    comm = Path(f"/proc/{os.getpid()}/comm").read_text().strip()
    holder = f"pid {os.getpid()} ({comm})"
    assert said == [f"hotline-gateway media-worker: SIP address {files.sip} (UDP) is already in use by {holder}"], log
    assert "Traceback" not in log and "pjsua2.Error" not in log, log[-3000:]
