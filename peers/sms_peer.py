"""What the faithful SMS peers (the SMPP SMSC, the CMPP ISMG) share: a TCP server on loopback that
tests start with `async with`, awaitable views of what it saw (whole messages per destination, the
answers to each delivery), woken by `notify()` instead of polled; and the pieces of their programs
(`serve` with an HTTP control endpoint, `send` posting to it)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Generic, Protocol, TypeVar

from aiohttp import ClientSession, web

LOOPBACK = "127.0.0.1"
MAX_RECORDED = 10_000  # messages and PDUs kept for tests to look at (oldest dropped)

T = TypeVar("T")
K = TypeVar("K")  # what names a delivery: the ISMG's Msg_Id, the SMSC's name for it


class Addressed(Protocol):
    @property
    def dest(self) -> str: ...


M = TypeVar("M", bound=Addressed)


class PeerServer(Generic[M, K]):
    """A listening peer: `start()` (a free port when `port` is 0), `close()`, `async with`.
    Subclasses serve a connection (`_serve`) and end them all (`_close_all`)."""

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self.messages: deque[M] = deque(maxlen=MAX_RECORDED)  # whole messages received, in order
        self.deliver_results: dict[K, list[int]] = {}  # a delivery -> the status of each answer to it
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Condition()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        raise NotImplementedError

    def _close_all(self) -> None:
        raise NotImplementedError

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        self._close_all()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def __aenter__(self: T) -> T:
        await self.start()  # type: ignore[attr-defined]
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def notify(self) -> None:
        """Wake every `until` to look again (after anything it may wait for changed)."""
        async with self._changed:
            self._changed.notify_all()

    async def until(self, check: Callable[[], T | None], timeout: float = 10.0) -> T:
        """Wait until `check()` returns something (not None), at most `timeout` seconds."""
        async with self._changed:
            async with asyncio.timeout(timeout):
                while (value := check()) is None:
                    await self._changed.wait()
        return value

    async def messages_to(self, dest: str, count: int = 1, timeout: float = 10.0) -> list[M]:
        """The first `count` whole messages to `dest`, once they are here."""

        def found() -> list[M] | None:
            matching = [message for message in self.messages if message.dest == dest]
            return matching[:count] if len(matching) >= count else None

        return await self.until(found, timeout)

    async def results_of(self, delivery: K, count: int = 1, timeout: float = 10.0) -> list[int]:
        """The statuses of the first `count` answers to a delivery, once they came."""

        def found() -> list[int] | None:
            results = self.deliver_results.get(delivery, [])
            return results[:count] if len(results) >= count else None

        return await self.until(found, timeout)


# --- the peers as programs (`python -m peers.ismg serve|send`, `python -m peers.smsc ...`) ---------


def address(value: str) -> tuple[str, int]:
    """HOST:PORT on the command line."""
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"HOST:PORT expected, not {value!r}")
    return host, int(port)


def add_send_command(commands: Any, *, control: tuple[str, int], to_help: str) -> None:
    """The `send` command: a citizen's SMS into the running peer, through its control endpoint."""
    send = commands.add_parser("send", help="a citizen's SMS into the running peer, to the logged-in gateway")
    send.add_argument("--from", dest="source", required=True, help="the citizen's number")
    send.add_argument("--to", dest="dest", required=True, help=to_help)
    send.add_argument("--text", required=True)
    send.add_argument("--control", type=address, default=control, help=f"HTTP control ({control[0]}:{control[1]})")


async def send_program(args: argparse.Namespace) -> None:
    """POST the `send` command's message to the control endpoint; print the peer's answer."""
    url = f"http://{args.control[0]}:{args.control[1]}/deliver"
    payload = {"from": args.source, "to": args.dest, "text": args.text}
    async with ClientSession() as session, session.post(url, json=payload) as response:
        response.raise_for_status()
        result: dict[str, Any] = await response.json()
    print(json.dumps(result), flush=True)


async def serve_program(
    peer: PeerServer[Any, Any], routes: list[web.RouteDef], control: tuple[str, int], name: str
) -> None:
    """Run `peer` and its HTTP control endpoint until interrupted; one line says both addresses."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    await peer.start()
    await web.TCPSite(runner, *control).start()
    print(f"{name} ready at {peer.host}:{peer.port} control=http://{control[0]}:{control[1]}", flush=True)
    try:
        await asyncio.Event().wait()  # until interrupted
    finally:
        await peer.close()
        await runner.cleanup()


def run_program(main: Callable[[], Coroutine[Any, Any, None]]) -> int:
    """The program's body under asyncio, logging to stderr, Ctrl-C an ordinary end."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", stream=sys.stderr)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(main())
    return 0
