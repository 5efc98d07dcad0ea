"""What the CMPP session and ISMG tests share: settings, a link logged in to the ISMG, an inbox
(`running` is `support.running`, shared with the SMPP tests)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

from gateway.channels.sms.cmpp_session import CmppLink, CmppSettings
from gateway.channels.sms.link import InboundSms
from gateway.channels.sms.text import Receipt
from peers.ismg import Ismg
from peers.sms_peer import LOOPBACK
from tests.channels.sms.support import running
from tests.logscan import register_secrets

SP_ID = "901234"
SECRET = "cmpp-shared-secret-for-tests"
CITIZEN = "13800138000"
HOTLINE = "106353112345"
LONG_TEXT = "您好，您反映的幸福路12号路灯不亮的问题已转交市政部门，预计三个工作日内修复。" * 4  # 3 parts

register_secrets([SECRET])


def settings(port: int, **overrides: Any) -> CmppSettings:
    """Quick timers, so that retransmission and reconnection happen within a test's patience."""
    base = CmppSettings(
        host=LOOPBACK,
        port=port,
        sp_id=SP_ID,
        secret=SECRET,
        service_id="HOTLINE",
        src_id=HOTLINE,
        response_timeout=2.0,
        reconnect_min=0.05,
        reconnect_max=0.2,
        throttle_min=0.01,
        throttle_max=0.05,
        stop_timeout=2.0,
    )
    return dataclasses.replace(base, **overrides)


class Inbox:
    """What the link handed over; `on_message`/`on_receipt` for the link, awaitable for the test."""

    def __init__(self, before: Callable[[InboundSms], Awaitable[None]] | None = None) -> None:
        self.messages: asyncio.Queue[InboundSms] = asyncio.Queue()
        self.receipts: asyncio.Queue[Receipt] = asyncio.Queue()
        self._before = before

    async def on_message(self, message: InboundSms) -> None:
        if self._before is not None:
            await self._before(message)  # may wait, or raise: then nothing is kept
        self.messages.put_nowait(message)

    async def on_receipt(self, receipt: Receipt) -> None:
        self.receipts.put_nowait(receipt)

    async def message(self, timeout: float = 10.0) -> InboundSms:
        return await asyncio.wait_for(self.messages.get(), timeout)

    async def receipt(self, timeout: float = 10.0) -> Receipt:
        return await asyncio.wait_for(self.receipts.get(), timeout)


@asynccontextmanager
async def linked(ismg: Ismg, inbox: Inbox, **overrides: Any) -> AsyncIterator[CmppLink]:
    """A link logged in to `ismg` (its ACTIVE_TEST answered: the session is serving)."""
    link = CmppLink(settings(ismg.port, **overrides), inbox.on_message, inbox.on_receipt)
    async with running(link, bound=False):
        await ismg.until(lambda: True if ismg.bound() else None)
        await ismg.active_test()
        yield link
