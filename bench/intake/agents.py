"""The agents of the intake benchmark: M seats on one event loop in one process.

Each seat logs in ready, accepts every offer at once and submits every claimed ticket, like
`hotline-gateway seat --auto` without the printing. It records when each offer arrived
(time.time_ns(), taken before the frame is parsed) and when each submit was acknowledged.
An `unavailable` error ("try again shortly") is retried after a short pause, as a seat client
should; every other error frame is counted as an error of the run.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.common.workers import Command, child_setup, serve

MAX_ERRORS_KEPT = 20
RETRY_DELAY = 0.1
MAX_RETRIES = 20
# Frame ids say what to resend when the answer is "unavailable": a:<ticket> accept, s:<ticket> submit.
RETRYABLE = {"a": "accept", "s": "submit"}


@dataclass
class SeatLog:
    """What all seats saw, keyed by ticket id."""

    total: int
    offers: dict[str, list[int]] = field(default_factory=dict)
    citizens: dict[str, str] = field(default_factory=dict)  # ticket id -> the citizen's phone, if any
    replying: bool = False  # reply to each claimed ticket (REPLY_TEXT) before submitting it
    category: str = ""  # submitted with each ticket ('' none): a dispatch catalogue requires one
    replies: dict[str, int] = field(default_factory=dict)  # ticket id -> when its reply frame went out
    submitted: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    error_count: int = 0
    retries: int = 0
    revoked: int = 0
    welcomed: int = 0
    all_welcomed: asyncio.Event = field(default_factory=asyncio.Event)
    stopping: bool = False

    def error(self, text: str) -> None:
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS_KEPT:
            self.errors.append(text)

    def welcome(self) -> None:
        self.welcomed += 1
        if self.welcomed == self.total:
            self.all_welcomed.set()


def reply_text(ticket_id: str) -> str:
    """The reply a replying seat sends: names its ticket, so the carrier's copy can be joined to it."""
    return f"您反映的问题已转相关部门处理。工单{ticket_id}"


class Seat:
    def __init__(self, ws: ClientConnection, agent: str, log: SeatLog) -> None:
        self.ws = ws
        self.agent = agent
        self.log = log
        self.attempts: dict[str, int] = {}
        self._retrying: set[asyncio.Task[None]] = set()

    async def send(self, kind: str, ticket_id: str) -> None:
        frame: dict[str, Any] = {"type": kind, "id": f"{kind[0]}:{ticket_id}", "ticket": ticket_id}
        if kind == "submit" and self.log.category:
            frame["fields"] = {"category": self.log.category}
        await self.ws.send(json.dumps(frame))

    async def on_frame(self, raw: str | bytes, now: int) -> None:
        frame = json.loads(raw)
        kind = frame.get("type")
        if kind == "offer":
            ticket_id = frame["ticket"]["id"]
            self.log.offers.setdefault(ticket_id, []).append(now)
            phone = (frame["ticket"].get("citizen") or {}).get("phone")
            if phone:
                self.log.citizens[ticket_id] = phone
            await self.send("accept", ticket_id)
        elif kind == "ticket" and frame["ticket"].get("status") == "claimed":
            ticket_id = frame["ticket"]["id"]
            if self.log.replying:
                self.log.replies[ticket_id] = time.time_ns()
                await self.ws.send(json.dumps({"type": "reply", "ticket": ticket_id, "text": reply_text(ticket_id)}))
            await self.send("submit", ticket_id)
        elif kind == "ack" and frame.get("status") == "submitted":
            self.log.submitted[frame["ticket"]] = now
        elif kind == "welcome":
            self.log.welcome()
        elif kind == "offer_revoked":
            self.log.revoked += 1
        elif kind == "error":
            self.on_error(frame, raw)

    def on_error(self, frame: dict[str, Any], raw: str | bytes) -> None:
        prefix, _, ticket_id = str(frame.get("re") or "").partition(":")
        attempts = self.attempts.get(frame.get("re") or "", 0)
        if frame.get("code") != "unavailable" or prefix not in RETRYABLE or attempts >= MAX_RETRIES:
            self.log.error(f"{self.agent}: {raw!s:.300}")
            return
        self.attempts[frame["re"]] = attempts + 1
        self.log.retries += 1
        task = asyncio.create_task(self.retry(RETRYABLE[prefix], ticket_id))
        self._retrying.add(task)
        task.add_done_callback(self._retrying.discard)

    async def retry(self, kind: str, ticket_id: str) -> None:
        await asyncio.sleep(RETRY_DELAY)
        try:
            await self.send(kind, ticket_id)
        except ConnectionClosed:
            self.log.error(f"{self.agent}: connection closed before retrying {kind} {ticket_id}")


async def run_seat(url: str, agent: str, token: str, log: SeatLog) -> None:
    try:
        async with connect(url, open_timeout=10, close_timeout=2) as ws:
            seat = Seat(ws, agent, log)
            await ws.send(json.dumps({"type": "hello", "v": 1, "agent": agent, "token": token, "state": "ready"}))
            async for raw in ws:
                await seat.on_frame(raw, time.time_ns())
    except (ConnectionClosed, OSError) as exc:
        if not log.stopping:
            log.error(f"{agent}: connection lost: {exc}")
        return
    if not log.stopping:
        log.error(f"{agent}: the gateway closed the connection")


class Agents:
    def __init__(self, url: str, credentials: list[tuple[str, str]]) -> None:
        self.log = SeatLog(total=len(credentials))
        self.tasks = [asyncio.create_task(run_seat(url, agent, token, self.log)) for agent, token in credentials]

    async def ready(self, command: Command) -> dict[str, Any]:
        try:
            await asyncio.wait_for(self.log.all_welcomed.wait(), command.get("timeout", 20.0))
        except TimeoutError:
            detail = "; ".join(self.log.errors[:3])
            raise RuntimeError(f"only {self.log.welcomed}/{self.log.total} seats logged in. {detail}") from None
        return {"welcomed": self.log.welcomed}

    async def mode(self, command: Command) -> dict[str, Any]:
        self.log.replying = bool(command.get("replying", False))
        self.log.category = str(command.get("category", ""))
        return {}

    async def report(self, command: Command) -> dict[str, Any]:
        log = self.log
        return {
            "offers": log.offers,
            "citizens": log.citizens,
            "replies": log.replies,
            "submitted": log.submitted,
            "errors": log.errors,
            "error_count": log.error_count,
            "retries": log.retries,
            "revoked": log.revoked,
        }

    async def close(self) -> None:
        self.log.stopping = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _main(conn: Connection, url: str, credentials: list[tuple[str, str]]) -> None:
    agents = Agents(url, credentials)
    try:
        await serve(conn, {"ready": agents.ready, "report": agents.report, "mode": agents.mode})
    finally:
        await agents.close()


def agents_process(conn: Connection, url: str, credentials: list[tuple[str, str]]) -> None:
    """Entry point of the spawned agents process."""
    child_setup()
    asyncio.run(_main(conn, url, credentials))
