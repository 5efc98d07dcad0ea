"""A real gateway for the console's browser tests: `running_gateway` on its own event loop in a
thread (the synchronous Playwright API drives Chromium from the test's thread), on fixed free ports
so the origins the console allows are the ones the browser uses; and a page of another origin."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from concurrent.futures import Future
from typing import Any, TypeVar

from aiohttp import web
from playwright.sync_api import Page

from gateway.config import GatewayConfig
from gateway.shell.app import Bound, Gateway
from gateway.shell.embedded_redis import free_port
from peers.gateway_config import AGENT_TOKENS
from tests.helpers import post_intake, running_gateway

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
# The closed network refuses what Chromium would fetch by itself (QUIC, updates, sync, GPU probing).
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def console_listen() -> dict[str, Any]:
    """Config overrides: HTTP and seats on free ports picked now (the allowed origin follows
    `http.listen`), offers that wait, claims that survive a restart of the seats."""
    return {
        "http": {"listen": f"127.0.0.1:{free_port()}"},
        "seats": {"listen": f"127.0.0.1:{free_port()}", "offer_timeout": 60, "reconnect_grace": 30},
    }


class GatewayThread:
    """`running_gateway(config)` served by a loop in a thread; `call` runs a coroutine there."""

    def __init__(self, config: GatewayConfig) -> None:
        self.config = config
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="gateway-loop", daemon=True)
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._serving: Future[None] | None = None
        self.gateway: Gateway | None = None
        self.bound: Bound | None = None

    def __enter__(self) -> GatewayThread:
        self._thread.start()
        self._serving = asyncio.run_coroutine_threadsafe(self._serve(), self.loop)
        if not self._ready.wait(30) or self.gateway is None:
            self._serving.result(5)  # raises what stopped the start
            raise RuntimeError("the gateway did not start")
        return self

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            async with running_gateway(self.config) as (gateway, bound):
                self.gateway, self.bound = gateway, bound
                self._ready.set()
                await self._stop.wait()
        finally:
            self._ready.set()

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        try:
            if self._serving is not None:
                self._serving.result(30)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def call(self, awaitable: Awaitable[T], timeout: float = 20) -> T:
        return asyncio.run_coroutine_threadsafe(_awaited(awaitable), self.loop).result(timeout)

    @property
    def http(self) -> str:
        assert self.bound is not None
        return f"http://{self.bound.http[0]}:{self.bound.http[1]}"

    @property
    def running(self) -> Gateway:
        assert self.gateway is not None
        return self.gateway

    def intake(self, body: dict[str, Any]) -> str:
        """A citizen's contact posted to the HTTP intake: the new ticket's id."""
        assert self.bound is not None
        status, answer = self.call(post_intake(self.bound, body))
        assert status == 202, answer
        return str(answer["ticket_id"])


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


async def foreign_site() -> web.AppRunner:
    """A page served from another origin (another port: the same site to a browser, so cookies go
    along; only the Origin header tells it apart)."""
    app = web.Application()

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="<!doctype html><title>别的网站</title><p>别的网站</p>", content_type="text/html")

    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", free_port()).start()
    return runner


def site_url(runner: web.AppRunner) -> str:
    host, port = runner.addresses[0][:2]
    return f"http://{host}:{port}/"


def log_in(page: Page, live: GatewayThread, agent: str = "a1", token: str | None = None) -> None:
    """Log in through the console's own form, as an agent does."""
    page.goto(f"{live.http}/console/")
    page.get_by_label("工号").fill(agent)
    page.get_by_label("令牌").fill(token or AGENT_TOKENS[agent])
    page.get_by_role("button", name="登录").click()
