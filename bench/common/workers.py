"""Worker processes driven by commands: the parent calls, the child's asyncio loop answers.

The parent side (`Worker`) sends a command dict over a pipe and waits for the reply dict; the child
side (`serve`) reads commands without blocking its event loop (the pipe is an asyncio reader), so the
seats or requests it runs keep going while a command is handled.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import signal
import traceback
from collections.abc import Awaitable, Callable, Mapping
from multiprocessing.connection import Connection
from typing import Any

from bench import BenchError

Command = dict[str, Any]
Handler = Callable[[Command], Awaitable[dict[str, Any]]]

_SPAWN = multiprocessing.get_context("spawn")


class Worker:
    """A spawned child running `target(conn, *args)`; `call` is one request/response round."""

    def __init__(self, name: str, target: Callable[..., None], *args: Any) -> None:
        self.name = name
        self._conn, child = _SPAWN.Pipe()
        self.process = _SPAWN.Process(target=target, args=(child, *args), name=name, daemon=True)

    @property
    def pid(self) -> int:
        if self.process.pid is None:
            raise BenchError(f"{self.name} is not running")
        return self.process.pid

    def start(self) -> None:
        self.process.start()

    def call(self, command: Command, timeout: float) -> dict[str, Any]:
        self._conn.send(command)
        if not self._conn.poll(timeout):
            raise BenchError(f"{self.name}: no answer to {command['op']!r} within {timeout:.0f}s")
        try:
            reply: dict[str, Any] = self._conn.recv()
        except EOFError:
            raise BenchError(f"{self.name} exited while handling {command['op']!r}") from None
        if "error" in reply:
            raise BenchError(f"{self.name}: {command['op']} failed: {reply['error']}")
        return reply

    def stop(self, timeout: float = 5.0) -> None:
        """Ask it to stop; terminate, then kill, if it does not."""
        if self.process.is_alive():
            with contextlib.suppress(OSError):  # a broken pipe: it is exiting already
                self._conn.send({"op": "stop"})
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self._conn.close()


def child_setup() -> None:
    """The parent owns its workers' lifetime: Ctrl-C stops the bench, which then stops them."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


async def serve(conn: Connection, handlers: Mapping[str, Handler]) -> None:
    """Answer commands until `stop` (or until the parent goes away)."""
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Command] = asyncio.Queue()

    def readable() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except EOFError:
            loop.remove_reader(conn.fileno())
            inbox.put_nowait({"op": "stop", "reply": False})

    loop.add_reader(conn.fileno(), readable)
    try:
        while True:
            command = await inbox.get()
            if command["op"] == "stop":
                if command.get("reply", True):
                    conn.send({"stopped": True})
                return
            conn.send(await _handle(handlers, command))
    finally:
        loop.remove_reader(conn.fileno())


async def _handle(handlers: Mapping[str, Handler], command: Command) -> dict[str, Any]:
    handler = handlers.get(command["op"])
    if handler is None:
        return {"error": f"unknown command {command['op']!r}"}
    try:
        return await handler(command)
    except Exception as exc:  # the parent raises it as a BenchError; the traceback goes to stderr
        traceback.print_exc()
        return {"error": f"{type(exc).__name__}: {exc}"}
