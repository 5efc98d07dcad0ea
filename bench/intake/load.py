"""The load generator of the intake benchmark: one process, one aiohttp session.

`burst` posts N tickets as fast as a bounded number of requests in flight allows; `paced` posts at a
fixed rate by schedule (request i is due at t0 + i/rate, whatever happened to the earlier ones), so a
slow gateway shows up as latency, not as a lower offered rate. Every request records its send time
(time.time_ns() just before its first attempt goes out) and the ticket id of its 202. A 503 is retried
after its Retry-After, as the API asks clients to; the latency then includes the wait.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from typing import Any

import aiohttp

from bench.common.workers import Command, child_setup, serve

TEXT = "我家小区门口的路灯坏了三天，晚上出行很不方便，请尽快安排维修。"
MAX_CONNECTIONS = 512
MAX_ERRORS_KEPT = 20
MAX_RETRIES = 5


@dataclass
class Records:
    """One entry per request, as parallel lists (cheap to pickle back to the parent)."""

    seq: list[int] = field(default_factory=list)
    ticket: list[str | None] = field(default_factory=list)
    status: list[int] = field(default_factory=list)
    sent_ns: list[int] = field(default_factory=list)
    done_ns: list[int] = field(default_factory=list)
    due_ns: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    retries: int = 0

    def add(self, seq: int, ticket: str | None, status: int, sent_ns: int, done_ns: int, due_ns: int) -> None:
        self.seq.append(seq)
        self.ticket.append(ticket)
        self.status.append(status)
        self.sent_ns.append(sent_ns)
        self.done_ns.append(done_ns)
        self.due_ns.append(due_ns or sent_ns)


class LoadGen:
    def __init__(self, http_url: str, api_key: str) -> None:
        self.url = f"{http_url}/api/v1/intake"
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        connector = aiohttp.TCPConnector(limit=MAX_CONNECTIONS)
        self.session = aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=60))

    async def post(self, seq: int, records: Records, due_ns: int = 0) -> None:
        """POST one ticket; a 503 is retried after its Retry-After with the same message id (idempotent)."""
        body = json.dumps({"text": TEXT, "message_id": f"b-{seq}"}, ensure_ascii=False).encode()
        sent = time.time_ns()
        status, payload = await self.request(body)
        for _ in range(MAX_RETRIES):
            if status != 503:
                break
            records.retries += 1
            await asyncio.sleep(float(payload.get("retry_after", 1.0)))
            status, payload = await self.request(body)
        records.add(
            seq, payload.get("ticket_id") if status == 202 else None, status, sent, time.time_ns(), due_ns
        )
        if status != 202 and len(records.errors) < MAX_ERRORS_KEPT:
            records.errors.append(f"b-{seq}: HTTP {status}: {json.dumps(payload, ensure_ascii=False):.200}")

    async def request(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """(status, JSON body); status -1 when the request failed without an answer."""
        try:
            async with self.session.post(self.url, data=body, headers=self.headers) as response:
                payload = await response.json(content_type=None)
                if "Retry-After" in response.headers:
                    payload["retry_after"] = response.headers["Retry-After"]
                return response.status, payload
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            return -1, {"exception": f"{type(exc).__name__}: {exc}"}

    async def burst(self, command: Command) -> dict[str, Any]:
        first, count, concurrency = command["first"], command["count"], command["concurrency"]
        records = Records()
        sequence = iter(range(first, first + count))

        async def lane() -> None:
            for seq in sequence:
                await self.post(seq, records)

        await asyncio.gather(*(lane() for _ in range(concurrency)))
        return asdict(records)

    async def paced(self, command: Command) -> dict[str, Any]:
        first, rate, seconds = command["first"], command["rate"], command["seconds"]
        total = int(rate * seconds)
        period_ns = 1_000_000_000 / rate
        start_ns = time.time_ns() + 20_000_000
        records = Records()
        tasks: list[asyncio.Task[None]] = []
        index = 0
        while index < total:
            now = time.time_ns()
            while index < total and start_ns + index * period_ns <= now:
                due = int(start_ns + index * period_ns)
                tasks.append(asyncio.create_task(self.post(first + index, records, due)))
                index += 1
            if index < total:
                await asyncio.sleep(max(0.0, (start_ns + index * period_ns - time.time_ns()) / 1e9))
        await asyncio.gather(*tasks)
        return asdict(records)

    async def close(self) -> None:
        await self.session.close()


async def _main(conn: Connection, http_url: str, api_key: str) -> None:
    load = LoadGen(http_url, api_key)
    try:
        await serve(conn, {"burst": load.burst, "paced": load.paced})
    finally:
        await load.close()


def load_process(conn: Connection, http_url: str, api_key: str) -> None:
    """Entry point of the spawned load-generator process."""
    child_setup()
    asyncio.run(_main(conn, http_url, api_key))
