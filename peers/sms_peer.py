"""What the faithful SMS peers (the SMPP SMSC, the CMPP ISMG) share: a TCP server on loopback that
tests start with `async with`, awaitable views of what it saw (whole messages per destination, the
answers to each delivery), woken by `notify()` instead of polled; the deliveries a peer owes an
account (sent in order within a window, sent again after an error answer or none, kept across a
lost connection for the next login); what tests ask of the next submit (drop, swallow, fail); and
the pieces of their programs (`serve` with an HTTP control endpoint, `send` posting to it)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
from collections import deque
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Protocol, TypeVar

from aiohttp import ClientSession, web

from gateway.ticket import mask_phone

LOOPBACK = "127.0.0.1"
MAX_RECORDED = 10_000  # messages and PDUs kept for tests to look at (oldest dropped)

T = TypeVar("T")
K = TypeVar("K")  # what names a delivery: the ISMG's Msg_Id, the SMSC's name for it
D = TypeVar("D")  # what is delivered: a deliver_sm, a CMPP_DELIVER
R = TypeVar("R")  # what answers the peer's own requests (enquire_link, ACTIVE_TEST...)


@dataclass(slots=True)
class Owed(Generic[K, D]):
    """A delivery this peer owes an account until it is answered OK."""

    account: str
    name: K  # what tests call it (`results_of`)
    delivery: D
    label: str  # for the log line that gives up on it
    attempts: int = 0


class Client(Generic[K, D]):
    """A gateway's connection: what it is owed and what it was asked, until it closes."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.account: str | None = None  # set once logged in
        self.awaiting: dict[int, tuple[Owed[K, D], asyncio.TimerHandle]] = {}  # sequence -> delivery sent
        self.requests: dict[int, asyncio.Future[object]] = {}  # sequence -> our request's answer
        self.closed = False


C = TypeVar("C", bound=Client[Any, Any])


class Addressed(Protocol):
    @property
    def dest(self) -> str: ...


M = TypeVar("M", bound=Addressed)


class PeerServer(Generic[M, K, D, C]):
    """A listening peer: `start()` (a free port when `port` is 0), `close()`, `async with`.
    Subclasses make a client (`_client`), read what it sent (`_received`) and write a delivery
    (`_write`)."""

    NAME: ClassVar[str]  # "SMSC": its log lines begin with it
    CLIENT: ClassVar[str]  # what it calls a gateway: "ESME"

    def __init__(
        self,
        host: str,
        port: int,
        accounts: dict[str, str],
        *,
        response_timeout: float,
        redeliver_delay: float,
        max_deliveries: int,
        window: int | None,
        echo: bool,
    ) -> None:
        self.host = host
        self.port = port
        self.accounts = accounts
        self.response_timeout = response_timeout  # a delivery unanswered this long is sent again
        self.redeliver_delay = redeliver_delay
        self.max_deliveries = max_deliveries
        self.window = window  # deliveries awaiting their answer on a connection (None: no limit)
        self.echo = echo
        self.messages: deque[M] = deque(maxlen=MAX_RECORDED)  # whole messages received, in order
        self.deliver_results: dict[K, list[int]] = {}  # a delivery -> the status of each answer to it
        self._server: asyncio.Server | None = None
        self._changed = asyncio.Condition()
        self._clients: list[C] = []
        self._unsent: dict[str, deque[Owed[K, D]]] = {}  # per account, in order
        self._failing: tuple[int, int] = (0, 0)  # the status for the next submits, how many
        self._swallow = 0
        self._drop_on_submit = False
        self._drop_after_answers = 0  # 0: never
        self._log = logging.getLogger(f"peers.{self.NAME.lower()}")

    # --- the subclass's part -----------------------------------------------------------------

    def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> C:
        raise NotImplementedError

    async def _received(self, client: C, data: bytes) -> None:
        """Bytes from the gateway: read and handle every whole PDU."""
        raise NotImplementedError

    def _write(self, client: C, sequence: int, delivery: D) -> None:
        """Send a delivery under this sequence number."""
        raise NotImplementedError

    def _next_sequence(self) -> int:
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

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        client = self._client(reader, writer)
        self._clients.append(client)
        try:
            with contextlib.suppress(OSError):  # the gateway went away (a reset): the same as EOF
                while not client.closed:
                    data = await reader.read(64 * 1024)
                    if not data:
                        break
                    await self._received(client, data)
        finally:
            self._close(client)
            self._clients.remove(client)
            await self.notify()

    def bound(self) -> bool:
        return any(client.account is not None and not client.closed for client in self._clients)

    # --- acting on demand ----------------------------------------------------------------------

    def fail_submits(self, status: int, count: int) -> None:
        """Answer the next `count` submits with this error status (nothing recorded)."""
        self._failing = (status, count)

    def swallow(self, count: int) -> None:
        """Leave the next `count` submits unanswered (as if lost on the way)."""
        self._swallow = count

    def drop_on_submit(self) -> None:
        """Close the connection when the next submit arrives, without answering or recording it."""
        self._drop_on_submit = True

    def drop(self) -> None:
        """Close every connection now."""
        self._close_all()

    def drop_after_answers(self, count: int) -> None:
        """Close the connection once the gateway's next `count` answers to deliveries were read on
        it: what it wrote after them is never read (answers lost on the way), and the deliveries they
        would have answered are owed again, sent first after the next login."""
        self._drop_after_answers = count

    async def send_raw(self, data: bytes) -> None:
        """Write bytes as they are to the logged-in gateway."""
        client = self._bound_client()
        client.writer.write(data)
        await client.writer.drain()

    async def _round_trip(self, sequence: int, data: bytes, timeout: float, answer: type[R]) -> R:
        """Send our request (its bytes, its sequence number) to the logged-in gateway; its answer."""
        client = self._bound_client()
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        client.requests[sequence] = future
        client.writer.write(data)
        async with asyncio.timeout(timeout):
            got = await future
        if not isinstance(got, answer):
            raise AssertionError(f"the {self.CLIENT} answered with {got!r}, not {answer.__name__}")
        return got

    def _lost_on_the_way(self, client: C) -> bool:
        """Whether tests asked to lose this submit: its connection dropped, or it went unanswered."""
        if self._drop_on_submit:
            self._drop_on_submit = False
            self._close(client)
            return True
        if self._swallow:
            self._swallow -= 1
            return True
        return False

    def _failure(self) -> int | None:
        """The error status tests asked this submit to be answered with, if any."""
        status, count = self._failing
        if not count:
            return None
        self._failing = (status, count - 1)
        return status

    # --- deliveries owed to an account ---------------------------------------------------------

    def _queue(self, owed: Owed[K, D]) -> None:
        self._unsent.setdefault(owed.account, deque()).append(owed)
        self._flush(owed.account)

    def _flush(self, account: str) -> None:
        """Send what is owed to the account, in order, while its window has room."""
        client = self._client_of(account)
        waiting = self._unsent.get(account)
        while client is not None and waiting and (self.window is None or len(client.awaiting) < self.window):
            self._send(client, waiting.popleft())

    def _send(self, client: C, owed: Owed[K, D]) -> None:
        owed.attempts += 1
        sequence = self._next_sequence()
        timer = asyncio.get_running_loop().call_later(self.response_timeout, self._timed_out, client, sequence)
        client.awaiting[sequence] = (owed, timer)
        self._write(client, sequence, owed.delivery)

    def _answered(self, client: C, sequence: int, status: int) -> None:
        """The gateway answered a delivery: recorded; sent again later unless the status is 0."""
        entry = client.awaiting.pop(sequence, None)
        if entry is None:
            return
        owed, timer = entry
        timer.cancel()
        self.deliver_results.setdefault(owed.name, []).append(status)
        if status != 0:
            self._retry(owed)
        if self._drop_after_answers:
            self._drop_after_answers -= 1
            if not self._drop_after_answers:
                self._close(client)  # the rest of what was read is dropped with the connection
                return
        self._flush(owed.account)

    def _timed_out(self, client: C, sequence: int) -> None:
        entry = client.awaiting.pop(sequence, None)
        if entry is not None:
            self._retry(entry[0])
            self._flush(entry[0].account)

    def _retry(self, owed: Owed[K, D]) -> None:
        if owed.attempts >= self.max_deliveries:
            self._log.warning("%s: %s given up after %d tries", self.NAME, owed.label, owed.attempts)
            return
        asyncio.get_running_loop().call_later(self.redeliver_delay, self._queue, owed)

    # --- connections ---------------------------------------------------------------------------

    def _client_of(self, account: str) -> C | None:
        for client in self._clients[::-1]:  # the newest connection first
            if client.account == account and not client.closed:
                return client
        return None

    def _bound_client(self) -> C:
        client = self._client_of(self._only_account())
        if client is None:
            raise RuntimeError(f"no {self.CLIENT} is logged in")
        return client

    def _only_account(self) -> str:
        if len(self.accounts) != 1:
            raise ValueError(f"name the account: this {self.NAME} has several")
        return next(iter(self.accounts))

    def _close(self, client: C) -> None:
        if client.closed:
            return
        client.closed = True
        client.writer.close()
        for owed, timer in reversed(client.awaiting.values()):
            timer.cancel()  # owed still: sent again, first, after the next login
            self._unsent.setdefault(owed.account, deque()).appendleft(owed)
        client.awaiting.clear()
        for future in client.requests.values():
            if not future.done():
                future.set_exception(ConnectionError(f"the {self.CLIENT}'s connection closed"))

    def _close_all(self) -> None:
        for client in list(self._clients):
            self._close(client)

    def _echo(self, dest: str, parts: int, text: str) -> None:
        """A whole message the gateway sent: printed for the program, logged in tests."""
        if self.echo:  # the program shows what the gateway sent; tests read `messages`
            print(f"SMS to {mask_phone(dest)} ({parts} parts): {text}", flush=True)
        else:
            self._log.info("%s: SMS to %s, %d parts", self.NAME, mask_phone(dest), parts)

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


@dataclass(frozen=True, slots=True)
class ProgramSpec:
    """What the peer's command line says of it (`python -m peers.NAME serve|send`)."""

    name: str  # smsc
    description: str  # An SMPP 3.4 SMSC for tests and demos.
    wire: str  # SMPP: the protocol the gateway speaks to it
    clients: str  # ESMEs
    port: int  # 2775: the protocol's; the HTTP control listens on the next one
    account: Callable[[str], tuple[str, str]]  # ID:SECRET from the command line
    account_help: str
    receipts: str  # the flag choosing the receipts sent: --receipt
    to_help: str  # what `send --to` names


def parse_program(spec: ProgramSpec, argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line of the peer's program: `serve` (its accounts, addresses, receipts) or `send`."""
    control = (LOOPBACK, spec.port + 1)
    parser = argparse.ArgumentParser(prog=f"python -m peers.{spec.name}", description=spec.description)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help=f"listen for {spec.clients} ({spec.wire}) and for commands (HTTP)")
    listen = f"{LOOPBACK}:{spec.port}"
    serve.add_argument("--listen", type=address, default=(LOOPBACK, spec.port), help=f"{spec.wire} address ({listen})")
    serve.add_argument("--account", type=spec.account, action="append", required=True, help=spec.account_help)
    serve.add_argument("--control", type=address, default=control, help=f"HTTP control ({LOOPBACK}:{spec.port + 1})")
    serve.add_argument(spec.receipts, choices=["DELIVRD", "UNDELIV"], default="DELIVRD", help="receipts sent")
    add_send_command(commands, control=control, to_help=spec.to_help)
    return parser.parse_args(argv)


def program_main(
    spec: ProgramSpec, argv: Sequence[str] | None, serve: Callable[[argparse.Namespace], Coroutine[Any, Any, None]]
) -> int:
    """The peer's program: `serve` with `serve(args)`, or `send`."""
    args = parse_program(spec, argv)
    return run_program(lambda: serve(args) if args.command == "serve" else send_program(args))


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
    peer: PeerServer[Any, Any, Any, Any], routes: list[web.RouteDef], control: tuple[str, int], name: str
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
