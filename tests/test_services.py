"""Services with a lifecycle: a crashed loop is restarted and counted, health says so, a process's
services start in order and stop in reverse, and a failed start leaves nothing running."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import aiohttp
import pytest
import redis.asyncio as aioredis

from gateway.config import GatewayConfig
from gateway.shell.app import Bound, Gateway
from gateway.shell.services import Health, Loop, Services
from tests.helpers import running_gateway


async def test_a_loop_that_crashes_is_logged_counted_and_restarted(caplog: pytest.LogCaptureFixture) -> None:
    runs = 0
    running_again = asyncio.Event()

    async def body() -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            raise RuntimeError("a bug")
        running_again.set()
        await asyncio.Event().wait()

    loop = Loop("dispatcher", body, base_delay=0.01)
    caplog.set_level(logging.ERROR, logger="gateway.services")
    await loop.start()
    await asyncio.wait_for(running_again.wait(), 5)
    assert loop.health() == Health("up", "RuntimeError: a bug", 1)
    [record] = caplog.records
    assert record.getMessage().startswith("service dispatcher stopped (RuntimeError: a bug); restart 1 in")
    assert record.exc_info is not None  # the traceback is in the log, not lost
    await loop.stop()
    assert loop.health().state == "stopped"


async def test_a_loop_that_returns_is_restarted_too_and_reported_meanwhile() -> None:
    async def body() -> None:
        return None

    loop = Loop("reaper", body, base_delay=3600)
    await loop.start()
    while loop.health().state != "restarting":
        await asyncio.sleep(0)  # the loop's own task runs first
    assert loop.health() == Health("restarting", "it returned", 1) and not loop.health().ready
    await loop.stop()


class Recorded:
    def __init__(self, name: str, events: list[str], fail_start: bool = False) -> None:
        self.name = name
        self._events = events
        self._fail_start = fail_start

    async def start(self) -> None:
        if self._fail_start:
            raise OSError("address in use")
        self._events.append(f"start {self.name}")

    async def stop(self) -> None:
        self._events.append(f"stop {self.name}")

    def health(self) -> Health:
        return Health("up")


async def test_services_start_in_order_stop_in_reverse_and_report() -> None:
    events: list[str] = []
    services = Services([Recorded("http", events), Recorded("seats", events)])
    await services.start()
    assert services.report().ready and set(services.report().services) == {"http", "seats"}
    await services.stop()
    assert events == ["start http", "start seats", "stop seats", "stop http"]


async def test_a_failed_start_stops_what_had_started_and_is_raised() -> None:
    events: list[str] = []
    services = Services([Recorded("http", events), Recorded("seats", events, fail_start=True)])
    with pytest.raises(OSError):
        await services.start()
    assert events == ["start http", "stop http"]


async def test_a_service_stuck_in_stop_delays_the_shutdown_but_never_stops_it() -> None:
    class Stuck(Recorded):
        async def stop(self) -> None:
            await asyncio.Event().wait()

    events: list[str] = []
    services = Services([Recorded("http", events), Stuck("front", events)], stop_timeout=0.05)
    await services.start()
    await asyncio.wait_for(services.stop(), 5)
    assert events == ["start http", "start front", "stop http"]


async def test_the_gateways_readyz_names_each_service_and_a_crashing_one_makes_it_503(config: GatewayConfig) -> None:
    crashed = asyncio.Event()

    async def broken() -> None:
        crashed.set()
        raise RuntimeError("a bug in a channel")

    assert config.redis.url
    client = aioredis.Redis.from_url(config.redis.url)
    gateway = Gateway(config, client)
    gateway.add(Loop("sms", broken, base_delay=60.0))  # crashes once, then waits out its back-off
    bound = await gateway.start()
    try:
        await asyncio.wait_for(crashed.wait(), 5)
        status, body = await readyz(bound)
        assert status == 503 and body["status"] == "unavailable" and body["redis"] == "ok"
        services = body["services"]
        assert list(services) == [
            "dispatcher",
            "pubsub",
            "reaper",
            "leases",
            "wallboard",
            "wallboard-intake",
            "sms",
            "http",
            "seats",
        ]
        assert services["sms"] == {"state": "restarting", "restarts": 1, "detail": "RuntimeError: a bug in a channel"}
        assert all(services[name]["state"] == "up" for name in services if name != "sms")
    finally:
        await gateway.stop()
        await client.aclose()
    assert all(health.state == "stopped" for health in gateway.report().services.values())


async def test_a_gateway_with_every_service_up_is_ready(config: GatewayConfig) -> None:
    async with running_gateway(config) as (_, bound):
        status, body = await readyz(bound)
    assert status == 200 and body["status"] == "ready" and body["config_version"] == 1
    assert {name: s["state"] for name, s in body["services"].items()} == dict.fromkeys(
        ["dispatcher", "pubsub", "reaper", "leases", "wallboard", "wallboard-intake", "http", "seats"], "up"
    )


async def readyz(bound: Bound) -> tuple[int, dict[str, Any]]:
    url = f"http://{bound.http[0]}:{bound.http[1]}/readyz"
    async with aiohttp.ClientSession() as http, http.get(url) as response:
        return response.status, await response.json()
