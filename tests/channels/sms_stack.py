"""What the SMS channel's tests share: either faithful peer (the SMSC for SMPP, the ISMG for CMPP)
behind one small interface, and the gateway config that points `[channels.sms]` at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

from gateway.channels.sms.cmpp import DeliverResp
from gateway.channels.sms.smpp import DeliverSmResp
from peers.ismg import Ismg
from peers.smsc import Smsc
from tests.logscan import register_secrets

Protocol = Literal["smpp", "cmpp"]
PROTOCOLS: tuple[Protocol, ...] = ("smpp", "cmpp")

CITIZEN = "13800138000"
SMPP_NUMBER = "12345"
CMPP_NUMBER = "106353112345"
SYSTEM_ID = "hotline"
PASSWORD = "pw4smpp1"  # SMPP 3.4: at most 8 characters
SP_ID = "901234"
SECRET = "cmpp-shared-secret-for-tests"
PASSWORD_ENV = "HG_TEST_SMS_SECRET"
# Three UCS-2 parts (67 characters each at most).
LONG_CHINESE = "幸福路十二号的路灯已经坏了三天，晚上非常黑，老人和孩子走路很不安全，请尽快派人来修理。" * 4

register_secrets([PASSWORD, SECRET])


@dataclass
class Peer:
    """One faithful peer, whichever protocol it speaks."""

    protocol: Protocol
    server: Smsc | Ismg

    @property
    def number(self) -> str:
        return SMPP_NUMBER if self.protocol == "smpp" else CMPP_NUMBER

    @property
    def secret(self) -> str:
        return PASSWORD if self.protocol == "smpp" else SECRET

    def channel_config(self, **overrides: Any) -> dict[str, Any]:
        """`[channels.sms]` pointing at this peer."""
        common = {"enabled": True, "protocol": self.protocol, "smsc": f"127.0.0.1:{self.server.port}"}
        common["password_env"] = PASSWORD_ENV
        if self.protocol == "smpp":
            return {**common, "system_id": SYSTEM_ID, "source_addr": SMPP_NUMBER, **overrides}
        return {**common, "sp_id": SP_ID, "service_id": "HOTLINE", "src_id": CMPP_NUMBER, **overrides}

    async def deliver(self, text: str, order: Sequence[int] | None = None, source: str = CITIZEN) -> list[Any]:
        """A citizen's SMS to the hotline; what names its parts' deliveries (for `results_of`)."""
        if isinstance(self.server, Smsc):
            return list(await self.server.deliver(source, self.number, text, order=order))
        return list(await self.server.deliver(source, self.number, text, order=order))

    async def answers(self, count: int) -> None:
        """Until the gateway has answered `count` deliveries (whatever it answered)."""
        if isinstance(self.server, Smsc):
            smsc = self.server
            await smsc.until(lambda: True if len(smsc.received(DeliverSmResp)) >= count else None)
        else:
            ismg = self.server
            await ismg.until(
                lambda: True if sum(isinstance(f.pdu, DeliverResp) for f in ismg.frames) >= count else None
            )


@asynccontextmanager
async def sms_peer(protocol: Protocol, **options: Any) -> AsyncIterator[Peer]:
    server: Smsc | Ismg = (
        Smsc({SYSTEM_ID: PASSWORD}, **options) if protocol == "smpp" else Ismg({SP_ID: SECRET}, **options)
    )
    async with server:
        yield Peer(protocol, server)
