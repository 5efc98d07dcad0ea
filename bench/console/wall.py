"""The wallboard under load: 200 agents, 50 queues, 100 events/s; supervisors 0, 1, 10, 50.

The gateway runs on its own loop in a thread of this process (`GatewayThread`); its CPU is that
thread's (`/proc/self/task/{tid}/stat`). Events are tickets stored at `rate` per second into random
queues by a load thread of its own (one `TicketQueue.intake` each: what the wall counts changes).
For each number of supervisors, the same load runs for `seconds` with that many supervisors'
sockets open (logged in through the console's API, frames read and dropped by a reader thread):
the gateway thread's CPU with no supervisor is the baseline, and the fan-out cost per supervisor
is (CPU with N - CPU with none) / N. One real supervisor page (Chromium) watches during the run
with one supervisor; the browser's CPU is the sum over Chromium's processes.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiohttp
from playwright.sync_api import Browser

from gateway.config import GatewayConfig, hash_secret, parse_config
from gateway.queue import TicketQueue
from gateway.shell.app import redis_client
from gateway.ticket import Ticket, new_ticket_id, utcnow
from peers.gateway_config import make_raw_config
from tests.web.console.support import GatewayThread, console_listen

QUEUES = 50
AGENTS = 200
SUPERVISOR_TOKEN = "token-bench-" + "w" * 24
TICKS = os.sysconf("SC_CLK_TCK")


def wall_config(redis_url: str, scratch: Path) -> GatewayConfig:
    queues = [{"name": f"q{n:02d}", "label": f"队列{n}", "skills": [f"s{n:02d}"]} for n in range(QUEUES)]
    agents = [
        {
            "id": f"ag{n:03d}",
            "name": f"坐席{n}",
            "skills": [f"s{n % QUEUES:02d}"],
            "token_hash": hash_secret(f"t{n}" * 8),
        }
        for n in range(AGENTS)
    ]
    supervisors = [{"id": "s1", "name": "班长", "token_hash": hash_secret(SUPERVISOR_TOKEN)}]
    raw = make_raw_config(
        "bw", redis_url, **console_listen(), queues=queues, agents=agents, supervisors=supervisors,
        routing={"default_queue": "q00", "by_channel": {}},
    )  # fmt: skip
    return parse_config(raw, scratch)


def thread_cpu_seconds(native_id: int) -> float:
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def chromium_cpu_seconds() -> float:
    """CPU seconds of the Chromium processes this process started (through Playwright's driver):
    its descendants, so another browser on the machine does not count."""
    parents: dict[int, int] = {}
    stats: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stats[int(entry.name)] = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stats[int(entry.name)].rsplit(")", 1)[1].split()[1])
    total = 0
    for pid, stat in stats.items():
        if "chrom" in stat[stat.index("(") + 1 : stat.rindex(")")] and _descends(pid, os.getpid(), parents):
            fields = stat.rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / TICKS


def _descends(pid: int, ancestor: int, parents: dict[int, int]) -> bool:
    while pid > 1:
        pid = parents.get(pid, 1)
        if pid == ancestor:
            return True
    return False


def gateway_thread_id(live: GatewayThread) -> int:
    return live.call(_native_id())


async def _native_id() -> int:
    return threading.get_native_id()


@contextmanager
def load(config: GatewayConfig, rate: int) -> Iterator[list[int]]:
    """Tickets stored at `rate`/s into random queues from a thread of its own; yields the count."""
    stored = [0]
    stop = threading.Event()

    async def produce() -> None:
        client = redis_client(config.redis.url or "", config.redis)
        queue = TicketQueue(client, config)
        rng = random.Random(7)
        start = time.monotonic()
        try:
            while not stop.is_set():
                due = start + stored[0] / rate
                await asyncio.sleep(max(0.0, due - time.monotonic()))
                now = utcnow()
                ticket = Ticket(id=new_ticket_id(now), channel="web", message_id=f"w{stored[0]}", received_at=now,
                                text="路灯不亮", queue=f"q{rng.randrange(QUEUES):02d}", status="queued")  # fmt: skip
                await queue.intake(ticket, "bench")
                stored[0] += 1
        finally:
            await client.aclose()

    thread = threading.Thread(target=lambda: asyncio.run(produce()), name="wall-load", daemon=True)
    thread.start()
    try:
        yield stored
    finally:
        stop.set()
        thread.join(10)


@contextmanager
def supervisors(http: str, count: int) -> Iterator[list[int]]:
    """`count` supervisor sockets on the wallboard, frames read and dropped; yields frames read."""
    frames = [0]
    ready = threading.Event()
    stop = threading.Event()

    async def watch() -> None:
        async with aiohttp.ClientSession() as session:
            sockets = [await _open(session, http) for _ in range(count)]
            ready.set()
            readers = [asyncio.create_task(_read(socket_, frames)) for socket_ in sockets]
            while not stop.is_set():
                await asyncio.sleep(0.1)
            for reader in readers:
                reader.cancel()
            for socket_ in sockets:
                await socket_.close()

    thread = threading.Thread(target=lambda: asyncio.run(watch()), name="wall-supervisors", daemon=True)
    thread.start()
    if count and not ready.wait(30):
        raise RuntimeError("the supervisors' sockets did not open")
    try:
        yield frames
    finally:
        stop.set()
        thread.join(10)


async def _open(session: aiohttp.ClientSession, http: str) -> aiohttp.ClientWebSocketResponse:
    """A supervisor session of its own (a cookie jar per socket) and its wallboard socket."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as login:
        body = {"supervisor": "s1", "token": SUPERVISOR_TOKEN}
        async with login.post(f"{http}/console/api/supervisor/login", json=body, headers={"Origin": http}) as answer:
            answer.raise_for_status()
        cookies = {cookie.key: cookie.value for cookie in jar}
    ws_url = http.replace("http://", "ws://") + "/console/ws/wallboard"
    cookie = "; ".join(f"{name}={value}" for name, value in cookies.items())
    return await session.ws_connect(ws_url, headers={"Origin": http, "Cookie": cookie})


async def _read(socket_: aiohttp.ClientWebSocketResponse, frames: list[int]) -> None:
    async for _ in socket_:
        frames[0] += 1


def measure(live: GatewayThread, config: GatewayConfig, browser: Browser, rate: int, seconds: float,
            counts: tuple[int, ...], screenshot: Path | None = None) -> dict[str, Any]:  # fmt: skip
    tid = gateway_thread_id(live)
    runs: dict[str, Any] = {}
    with load(config, rate) as stored:
        time.sleep(1.0)  # the load settles
        for count in counts:
            with supervisors(live.http, count) as frames:
                time.sleep(1.0)
                cpu0, stored0, frames0, wall0 = thread_cpu_seconds(tid), stored[0], frames[0], time.monotonic()
                time.sleep(seconds)
                elapsed = time.monotonic() - wall0
                runs[str(count)] = {
                    "gateway_cpu_share": round((thread_cpu_seconds(tid) - cpu0) / elapsed, 4),
                    "events_per_s": round((stored[0] - stored0) / elapsed, 1),
                    "frames_per_s": round((frames[0] - frames0) / elapsed, 1),
                }
        runs["browser"] = browser_share(live, browser, seconds, screenshot)
    return runs


def browser_share(live: GatewayThread, browser: Browser, seconds: float, screenshot: Path | None) -> dict[str, Any]:
    """One supervisor's page open on the wall while the load runs: Chromium's CPU share of a core;
    then, with `screenshot`, the page as it is under the load (written there as PNG)."""
    page = browser.new_page(viewport={"width": 1366, "height": 768}, locale="zh-CN")
    try:
        page.goto(f"{live.http}/console/wallboard.html")
        page.get_by_label("班长工号").fill("s1")
        page.get_by_label("令牌").fill(SUPERVISOR_TOKEN)
        page.get_by_role("button", name="登录").click()
        page.locator("#queues tbody tr").nth(QUEUES - 1).wait_for()
        time.sleep(1.0)
        cpu0, wall0 = chromium_cpu_seconds(), time.monotonic()
        time.sleep(seconds)
        share = (chromium_cpu_seconds() - cpu0) / (time.monotonic() - wall0)
        rows = page.locator("#queues tbody tr").count()
        if screenshot is not None:
            page.screenshot(path=str(screenshot))
    finally:
        page.close()
    return {"cpu_share": round(share, 4), "queue_rows": rows}
