"""What the SMS channel's tests share: either faithful peer (the SMSC for SMPP, the ISMG for CMPP)
behind one small interface, and the gateway config that points `[channels.sms]` at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Literal

import pytest

from gateway.channels.sms.cmpp import DeliverResp
from gateway.channels.sms.smpp import DeliverSmResp
from gateway.channels.sms_channel import SmsChannel
from gateway.config import GatewayConfig
from gateway.shell.app import Bound, Gateway
from peers.ismg import Ismg
from peers.smsc import Smsc
from tests.helpers import Seat, running_gateway
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

    def receipt(self, part_id: str, stat: str = "DELIVRD") -> None:
        """A receipt on a part the gateway submitted (named as the gateway names it)."""
        if isinstance(self.server, Smsc):
            self.server.receipt(part_id, stat)
        else:
            self.server.report(int(part_id, 16), stat)

    async def sent_to(self, dest: str, count: int = 1) -> list[tuple[str, tuple[str, ...], tuple[int, ...]]]:
        """The first `count` whole SMS the gateway sent to `dest`: text, the parts' ids, their coding."""
        if isinstance(self.server, Smsc):
            received = await self.server.messages_to(dest, count)
            return [(m.text, m.message_ids, tuple(p.data_coding for p in m.parts)) for m in received]
        sent = await self.server.messages_to(dest, count)
        return [(m.text, m.msg_ids, tuple(p.msg_fmt for p in m.parts)) for m in sent]

    async def restart(self) -> None:
        """Down (every connection dropped, nobody listening), then up again on the same port."""
        port = self.server.port
        await self.server.close()
        self.server = fresh_server(self.protocol, port=port)
        await self.server.start()

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


def fresh_server(protocol: Protocol, **options: Any) -> Smsc | Ismg:
    if protocol == "smpp":
        return Smsc({SYSTEM_ID: PASSWORD}, **options)
    return Ismg({SP_ID: SECRET}, **options)


@asynccontextmanager
async def sms_peer(protocol: Protocol, **options: Any) -> AsyncIterator[Peer]:
    peer = Peer(protocol, fresh_server(protocol, **options))
    await peer.server.start()
    try:
        yield peer
    finally:
        await peer.server.close()  # the one started last


def sms_config(config_factory: Any, peer: Peer, **overrides: Any) -> GatewayConfig:
    return config_factory(channels={"sms": peer.channel_config(**overrides)})  # type: ignore[no-any-return]


@asynccontextmanager
async def sms_gateway(
    protocol: Protocol, config_factory: Any, monkeypatch: pytest.MonkeyPatch, secret: str | None = None, **peer: Any
) -> AsyncIterator[tuple[Peer, Gateway, Bound]]:
    """A peer, and a gateway whose SMS channel logs in to it (with `secret` when given)."""
    async with sms_peer(protocol, **peer) as the_peer:
        monkeypatch.setenv(PASSWORD_ENV, secret or the_peer.secret)
        async with running_gateway(sms_config(config_factory, the_peer)) as (gateway, bound_at):
            yield the_peer, gateway, bound_at


@dataclass(frozen=True)
class SmsDesk:
    """A peer, a gateway whose SMS channel is logged in to it, and agent a1's seat on that gateway."""

    peer: Peer
    gateway: Gateway
    seat: Seat


@asynccontextmanager
async def sms_desk(protocol: Protocol, config_factory: Any, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[SmsDesk]:
    """`sms_gateway` with seat a1 connected (closed again when the test's body is done)."""
    async with sms_gateway(protocol, config_factory, monkeypatch) as (peer, gateway, bound_at):
        seat = await Seat.connect(bound_at, "a1")
        yield SmsDesk(peer, gateway, seat)
        await seat.close()


async def claimed_sms_ticket(peer: Peer, seat: Seat, text: str = "路灯坏了") -> str:
    """A citizen's SMS, offered to the seat and accepted; its ticket id."""
    await peer.deliver(text)
    ticket_id = str((await seat.expect("offer"))["ticket"]["id"])
    await seat.send(type="accept", ticket=ticket_id)
    await seat.expect("ticket")
    return ticket_id


def the_sms_channel(gateway: Gateway) -> SmsChannel:
    assert gateway.sms is not None
    return gateway.sms


async def bound(gateway: Gateway) -> None:
    await channel_bound(the_sms_channel(gateway))


async def channel_bound(channel: SmsChannel) -> None:
    """Until the channel's link is bound."""
    while channel.link.health().state != "bound":
        await channel.link.changed()
