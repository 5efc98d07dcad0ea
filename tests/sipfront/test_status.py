"""`hotline-gateway status` when the SIP front is off: a plain sentence, not kamcmd's socket error.

It used to print `not reachable: kamailio not reachable at …/kamailio_ctl: ERROR: connect_unix_sock:
connect(…): No such file or directory [2]` on a host whose front was simply not started. The command
runs as an operator runs it (a process), against a real Redis holding a worker's heartbeat.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
import tomli_w

from gateway.keys import Keys
from gateway.shell.embedded_redis import EmbeddedRedis
from peers.flows import DEFAULT_FLOW
from peers.gateway_config import make_raw_config

RAW_TEXTS = ("Traceback", "connect_unix_sock", "No such file", "Connection refused", "[2]", "[111]", "errno")


async def _status(tmp_path: Path, redis_url: str, key_prefix: str, front: dict[str, Any]) -> str:
    raw = make_raw_config(key_prefix, redis_url)
    raw["sipfront"] = front
    if front["enabled"]:  # the front serves media workers: it refuses a config without voice
        raw["voice"] = {"enabled": True, "flows": [str(DEFAULT_FLOW)]}
    path = tmp_path / "gateway.toml"
    path.write_text(tomli_w.dumps(raw))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.cli", "status", "--config", str(path), "--redis-url", redis_url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode()
    assert proc.returncode == 0, text
    assert not [raw_text for raw_text in RAW_TEXTS if raw_text in text], text
    return text


async def _a_worker_beats(redis_url: str, key_prefix: str) -> None:
    client = aioredis.Redis.from_url(redis_url)
    keys = Keys(key_prefix)
    try:
        seconds, _ = await client.time()
        await client.zadd(keys.workers, {"w1": (int(seconds) + 60) * 1000})
        await client.hset(keys.worker("w1"), mapping={"sip": "127.0.0.1:5070", "pid": "7", "callers": "1"})
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("front", "says"),
    [
        ({"enabled": False}, "the SIP front is not enabled ([sipfront] enabled = false)"),
        ({"enabled": True}, "the SIP front is not running: nothing answers on "),
    ],
    ids=["disabled", "enabled-not-running"],
)
async def test_status_says_plainly_that_the_front_is_off(
    tmp_path: Path, redis_server: EmbeddedRedis, key_prefix: str, run_dir: Path, front: dict[str, Any], says: str
) -> None:
    redis_url: str = redis_server.url
    await _a_worker_beats(redis_url, key_prefix)
    text = await _status(tmp_path, redis_url, key_prefix, {**front, "dir": str(run_dir)})
    assert "w1  127.0.0.1:5070  7" in text, text  # the workers are still shown
    (line,) = [line.strip() for line in text.splitlines() if "SIP front" in line]
    assert line.startswith(says), text
    if front["enabled"]:
        assert line == f"{says}{run_dir / 'kamailio_ctl'}", text
