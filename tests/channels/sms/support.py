"""What the SMS tests of both protocols share: a link running in the background, and waiting for
its state (SMPP and CMPP links are both `session.Session`s)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from gateway.channels.sms.link import InboundSms, LinkHealth, LinkState
from gateway.channels.sms.session import Session

LinkT = TypeVar("LinkT", bound=Session[Any, Any, Any])
T = TypeVar("T")


async def wait_state(link: Session[Any, Any, Any], state: LinkState, timeout: float = 10.0) -> LinkHealth:
    """Once the link is in `state`: its health then."""
    async with asyncio.timeout(timeout):
        while (health := link.health()).state != state:
            await link.changed()
    return health


@asynccontextmanager
async def running(link: LinkT, *, bound: bool, timeout: float = 10.0) -> AsyncIterator[LinkT]:
    """The link's run() in the background (bound first when `bound`), stopped and its end awaited
    on the way out."""
    task = asyncio.create_task(link.run())
    try:
        if bound:
            await wait_state(link, "bound", timeout)
        yield link
    finally:
        await link.stop()
        async with asyncio.timeout(10):
            await task


async def read_next(
    reader: asyncio.StreamReader,
    next_one: Callable[[], T | None],
    feed: Callable[[bytes], None],
    peer: str,
    timeout: float = 10.0,
) -> T:
    """The next whole PDU a hand-written client's decoder (`next_one`, `feed`) makes of what `peer`
    sends; ConnectionError when the peer closes first."""
    async with asyncio.timeout(timeout):
        while (message := next_one()) is None:
            data = await reader.read(65536)
            if not data:
                raise ConnectionError(f"the {peer} closed the connection")
            feed(data)
    return message


def failing_once(error: Exception) -> tuple[list[InboundSms], Callable[[InboundSms], Awaitable[None]]]:
    """A handler of inbound messages that raises `error` for the first one (the store down, say),
    and the list of every message it was given."""
    seen: list[InboundSms] = []

    async def handler(message: InboundSms) -> None:
        seen.append(message)
        if len(seen) == 1:
            raise error

    return seen, handler
