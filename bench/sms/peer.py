"""The SMS benchmark's carrier side: the faithful SMSC (SMPP) or ISMG (CMPP) in its own process.

`flood` sends N citizens' messages (each from its own number, so none joins another's ticket) with
at most `window` deliveries awaiting the gateway's answer, as a carrier's window allows; it records
when each message's delivery went out and when its answer came. `replies` waits until the gateway
has submitted N messages and returns when each arrived (time.time_ns(), stamped as the peer records
it) with its text, so the parent can join them to the seats' `reply` frames.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any, Literal

from bench.common.workers import Command, child_setup, serve
from peers.ismg import Ismg
from peers.smsc import Smsc

Protocol = Literal["smpp", "cmpp"]
CITIZEN_BASE = 13900000000  # the flood's citizens: 139xxxxxxxx, one number each
FLOOD_TEXT = "幸福路十二号的路灯坏了，晚上很黑，请尽快修理。编号{n}"


class StampedSmsc(Smsc):
    """An SMSC that notes when each submitted message became whole (the reply round trip's end)."""

    arrivals: list[tuple[str, str, int]]

    def _record(self, *args: Any, **kwargs: Any) -> None:
        _stamped(self, lambda: super(StampedSmsc, self)._record(*args, **kwargs))


class StampedIsmg(Ismg):
    """The same for the ISMG."""

    arrivals: list[tuple[str, str, int]]

    def _record(self, *args: Any, **kwargs: Any) -> None:
        _stamped(self, lambda: super(StampedIsmg, self)._record(*args, **kwargs))


def _stamped(server: StampedSmsc | StampedIsmg, record: Callable[[], None]) -> None:
    """Record a part; when it made a message whole, note the message's arrival time."""
    last = server.messages[-1] if server.messages else None
    record()
    if server.messages and server.messages[-1] is not last:
        message = server.messages[-1]
        server.arrivals.append((message.dest, message.text, time.time_ns()))


class Carrier:
    def __init__(self, protocol: Protocol, account: str, secret: str, number: str) -> None:
        self.protocol = protocol
        self.number = number
        self.server: StampedSmsc | StampedIsmg = (
            StampedSmsc({account: secret}, response_timeout=30.0)
            if protocol == "smpp"
            else StampedIsmg({account: secret}, response_timeout=30.0)
        )
        self.server.arrivals = []

    async def start(self, command: Command) -> dict[str, Any]:
        await self.server.__aenter__()
        return {"port": self.server.port}

    async def bound(self, command: Command) -> dict[str, Any]:
        timeout = float(command.get("timeout", 20.0))
        if isinstance(self.server, Smsc):
            await self.server.bound_attempts(1, timeout)
        else:
            await self.server.logged_in(1, timeout)
        return {}

    async def flood(self, command: Command) -> dict[str, Any]:
        """`count` messages, at most `window` awaiting the gateway's answer at once."""
        count, window = int(command["count"]), int(command["window"])
        first = int(command.get("first", 0))
        slots = asyncio.Semaphore(window)
        sent: dict[str, int] = {}
        answered: dict[str, int] = {}

        async def one(n: int) -> None:
            citizen = str(CITIZEN_BASE + first + n)
            async with slots:
                sent[citizen] = time.time_ns()
                names = await self.server.deliver(citizen, self.number, FLOOD_TEXT.format(n=first + n))
                for name in names:
                    await self.server.results_of(name, 1, timeout=60.0)  # type: ignore[arg-type]
                answered[citizen] = time.time_ns()

        await asyncio.gather(*(one(n) for n in range(count)))
        return {"sent": sent, "answered": answered}

    async def replies(self, command: Command) -> dict[str, Any]:
        """Every message the gateway submitted so far, once `count` have arrived."""
        count, timeout = int(command["count"]), float(command.get("timeout", 60.0))
        server = self.server
        await server.until(lambda: True if len(server.arrivals) >= count else None, timeout)
        return {"arrivals": list(server.arrivals)}

    async def close(self) -> None:
        await self.server.__aexit__(None, None, None)


async def _main(conn: Connection, protocol: Protocol, account: str, secret: str, number: str) -> None:
    carrier = Carrier(protocol, account, secret, number)
    try:
        await serve(
            conn,
            {"start": carrier.start, "bound": carrier.bound, "flood": carrier.flood, "replies": carrier.replies},
        )
    finally:
        await carrier.close()


def carrier_process(conn: Connection, protocol: Protocol, account: str, secret: str, number: str) -> None:
    """Entry point of the spawned carrier process."""
    child_setup()
    asyncio.run(_main(conn, protocol, account, secret, number))
