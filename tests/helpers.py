"""Test helpers: an in-process gateway and a scripted seat client over real sockets."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from websockets.asyncio.client import ClientConnection, connect

from gateway.config import GatewayConfig
from gateway.queue import TicketQueue
from gateway.shell.app import Bound, Gateway
from gateway.ticket import Citizen, Ticket, VoiceCall, new_ticket_id, utcnow
from gateway.web.seat_protocol import parse_server_frame
from peers.gateway_config import AGENT_TOKENS, API_KEY
from tests.redis_typed import texts


@asynccontextmanager
async def running_gateway(config: GatewayConfig) -> AsyncIterator[tuple[Gateway, Bound]]:
    assert config.redis.url
    client = aioredis.Redis.from_url(config.redis.url)
    gateway = Gateway(config, client)
    bound = await gateway.start()
    try:
        yield gateway, bound
    finally:
        await gateway.stop()
        async with asyncio.timeout(10):
            await client.aclose()


class Seat:
    """A scripted agent seat: send frames, wait for frames of a given type."""

    _ids = itertools.count(1)

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.welcome: dict[str, Any] = {}

    @classmethod
    async def connect(
        cls, bound: Bound, agent: str, token: str | None = None, state: str = "ready", since: str | None = None
    ) -> Seat:
        ws = await connect(f"ws://{bound.seats[0]}:{bound.seats[1]}", open_timeout=5)
        seat = cls(ws)
        hello: dict[str, Any] = {"v": 1, "agent": agent, "token": token or AGENT_TOKENS[agent], "state": state}
        await seat.send(type="hello", **hello, **({"since": since} if since else {}))
        seat.welcome = await seat.expect("welcome")
        return seat

    async def send(self, **frame: Any) -> int:
        frame_id = next(self._ids)
        await self.ws.send(json.dumps({"id": frame_id, **frame}, ensure_ascii=False))
        return frame_id

    async def expect(self, kind: str, timeout: float = 5.0) -> dict[str, Any]:
        for index, frame in enumerate(self.frames):
            if frame["type"] == kind:
                return self.frames.pop(index)
        try:
            async with asyncio.timeout(timeout):
                while True:
                    received: dict[str, Any] = json.loads(await self.ws.recv())
                    parse_server_frame(received)  # every frame a test sees is one of the protocol's types
                    if received["type"] == kind:
                        return received
                    self.frames.append(received)
        except TimeoutError:
            # Still a TimeoutError (`nothing` relies on it), but one that says what did arrive.
            seen = [frame.get("type") for frame in self.frames]
            raise TimeoutError(f"no {kind!r} frame within {timeout} s; other frames held: {seen}") from None

    async def nothing(self, kind: str, wait: float = 0.5) -> None:
        try:
            frame = await self.expect(kind, wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected {kind} frame: {frame}")

    async def close(self) -> None:
        await self.ws.close()


async def post_intake(
    bound: Bound, body: dict[str, Any] | bytes, key: str = API_KEY, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any]]:
    url = f"http://{bound.http[0]}:{bound.http[1]}/api/v1/intake"
    all_headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json", **(headers or {})}
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with (
        aiohttp.ClientSession() as session,
        session.post(url, data=data, headers=all_headers) as response,
    ):
        return response.status, await response.json()


class GatewayProcess:
    """`hotline-gateway run` as a real child process, on ports it picks itself (port 0)."""

    def __init__(self, config_path: str, redis_url: str | None = None) -> None:
        self.config_path = config_path
        self.redis_url = redis_url
        self.process: asyncio.subprocess.Process | None = None
        self.bound: Bound | None = None

    async def start(self, timeout: float = 20.0) -> Bound:
        import sys

        args = [
            sys.executable,
            "-m",
            "gateway.cli",
            "--log-level",
            "WARNING",
            "run",
            "--config",
            self.config_path,
        ]
        if self.redis_url:
            args += ["--redis-url", self.redis_url]
        self.process = await asyncio.create_subprocess_exec(*args, stdout=asyncio.subprocess.PIPE)
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.process.stdout.readline()).decode()
                if not line:
                    raise RuntimeError("gateway exited before it was ready")
                if line.startswith("hotline-gateway ready"):
                    break
        fields = dict(part.split("=", 1) for part in line.split()[2:])
        http = fields["http"].removeprefix("http://").rsplit(":", 1)
        seats = fields["seats"].removeprefix("ws://").rsplit(":", 1)
        self.bound = Bound(http=(http[0], int(http[1])), seats=(seats[0], int(seats[1])))
        return self.bound

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def stop(self) -> int:
        if self.process is None:
            return 0
        if self.process.returncode is None:
            self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), 20)


class WorkerProcess:
    """`hotline-gateway media-worker` as a real child process; `ready` once its SIP port is bound."""

    def __init__(self, config_path: str, redis_url: str, worker_id: str, listen: str) -> None:
        self.args = ["media-worker", "--config", config_path, "--redis-url", redis_url, "--id", worker_id]
        self.args += ["--listen", listen]
        self.worker_id = worker_id
        self.process: asyncio.subprocess.Process | None = None

    async def start(self, timeout: float = 30.0) -> None:
        import sys

        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "--log-level", "INFO", *self.args,
            stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert self.process.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = (await self.process.stdout.readline()).decode(errors="replace")
                if not line:
                    raise RuntimeError("media worker exited before it was ready")
                if line.startswith("media-worker ready"):
                    break
        self._drain = asyncio.create_task(self._discard(self.process.stdout))

    @staticmethod
    async def _discard(stream: asyncio.StreamReader) -> None:
        while await stream.read(65536):
            pass

    def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.kill()

    async def stop(self, timeout: float = 20.0) -> int:
        if self.process is None:
            return 0
        if self.process.returncode is None:
            self.process.terminate()
        return await asyncio.wait_for(self.process.wait(), timeout)


def queued_ticket(message_id: str, **fields: Any) -> Ticket:
    """A ticket as a channel's intake would queue it (queue general, web unless `channel` is given),
    for tests that write tickets straight into the queue."""
    now = utcnow()
    base: dict[str, Any] = {"channel": "web", "received_at": now, "queue": "general", "status": "queued"}
    return Ticket(id=new_ticket_id(now), message_id=message_id, **{**base, **fields})


def voice_ticket(call_id: str, caller: str = "13812345678", **fields: Any) -> Ticket:
    """A caller's queued voice ticket, held by media worker w1."""
    voice = VoiceCall(worker="w1", call_id=call_id, caller=caller, called=fields.pop("called", ""))
    return queued_ticket(call_id, channel="voice", citizen=Citizen(phone=caller), voice=voice, **fields)


async def handled(queue: TicketQueue, ticket: Ticket, agent: str, **edits: Any) -> None:
    """`ticket` filed, offered to `agent` (no seat: the queue's own calls), accepted and submitted
    with `edits`, as a seat would: a citizen's earlier ticket, closed."""
    await queue.intake(ticket, "test")
    offered = await queue.offer(agent, [ticket.queue])
    assert offered is not None and offered.id == ticket.id
    claimed = await queue.accept(ticket.id, agent)
    await queue.submit(ticket.id, agent, claimed.ticket().model_copy(update=edits))


async def stored_ticket_ids(client: aioredis.Redis, prefix: str) -> list[str]:
    """The ids of the tickets under `prefix` (their hashes, not their histories or conversations), sorted: for tests
    whose tickets another process files."""
    keys = texts(await client.keys(f"{prefix}:t:*"))
    return sorted(key.rsplit(":", 1)[1] for key in keys if not key.endswith((":h", ":m")))
