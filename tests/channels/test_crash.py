"""The gateway process SIGKILLed with replies in its outbox and a citizen's long SMS in flight
(`python -m gateway.cli run` as a child, the faithful SMSC or ISMG here): after a restart on the
same Redis nothing is lost (every accepted message is one ticket, every reply reaches the citizen)
and nothing is sent or ticketed twice (the peer's own records say so)."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import tomli_w

from gateway.channels.sms.cmpp import DeliverResp, Submit
from gateway.channels.sms.smpp import DeliverSmResp, SubmitSm
from gateway.messages import ConversationNews, Created
from gateway.ticket import Ticket
from peers.gateway_config import make_raw_config
from peers.smsc import Smsc
from tests.channels.sms_stack import CITIZEN, LONG_CHINESE, PASSWORD_ENV, PROTOCOLS, Peer, Protocol, sms_peer
from tests.channels.test_outbound import LONG_REPLY, outbox_ack
from tests.helpers import GatewayProcess, Seat

OTHER_CITIZEN = "13900139000"
REPLIES = ("已收到, 正在派单", LONG_REPLY)  # the second in three UCS-2 parts


def submits_seen(peer: Peer) -> int:
    """Every submit the gateway wrote to the peer, answered or not (a part each)."""
    server = peer.server
    if isinstance(server, Smsc):
        return len(server.received(SubmitSm))
    return sum(isinstance(frame.pdu, Submit) for frame in server.frames)


def answers_seen(peer: Peer) -> int:
    """Every answer the gateway gave a delivery (a part each)."""
    server = peer.server
    if isinstance(server, Smsc):
        return len(server.received(DeliverSmResp))
    return sum(isinstance(frame.pdu, DeliverResp) for frame in server.frames)


@asynccontextmanager
async def gateway_process(path: Path) -> AsyncIterator[GatewayProcess]:
    process = GatewayProcess(str(path))
    await process.start()
    try:
        yield process
    finally:
        process.kill()
        await process.stop()


async def created_tickets(redis_client: Any, key_prefix: str) -> list[str]:
    entries = await redis_client.xrange(f"{key_prefix}:created")
    return [Created.parse(fields).ticket for _, fields in entries]


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_sigkilled_gateway_loses_nothing_and_repeats_nothing_after_its_restart(
    protocol: Protocol,
    redis_server: Any,
    redis_client: Any,
    key_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with sms_peer(protocol) as peer:
        monkeypatch.setenv(PASSWORD_ENV, peer.secret)  # the child's environment
        path = tmp_path / "gateway.toml"
        raw = make_raw_config(key_prefix, redis_server.url, channels={"sms": peer.channel_config()})
        path.write_text(tomli_w.dumps(raw))

        async with gateway_process(path) as first:
            assert first.bound is not None and first.process is not None
            await peer.server.until(lambda: True if peer.server.bound() else None)
            seat = await Seat.connect(first.bound, "a1")
            await peer.deliver("幸福路的路灯坏了")
            ticket_id = str((await seat.expect("offer"))["ticket"]["id"])
            await seat.send(type="accept", ticket=ticket_id)
            await seat.expect("ticket")
            # Both replies in the outbox: the first submitted and never answered (lost on the way),
            # the second waiting behind it.
            peer.server.swallow(1)
            for reply in REPLIES:
                await seat.send(type="reply", ticket=ticket_id, text=reply)
            assert len([await outbox_ack(seat) for _ in REPLIES]) == len(REPLIES)
            await peer.server.until(lambda: True if submits_seen(peer) >= 1 else None)
            await seat.close()
            # A long SMS the peer sends while the gateway can read nothing of it: in flight at the kill.
            os.kill(first.process.pid, signal.SIGSTOP)
            answered_before = answers_seen(peer)
            await peer.deliver(LONG_CHINESE, order=(2, 3, 1), source=OTHER_CITIZEN)
            first.kill()  # SIGKILL, stopped as it is
        assert answers_seen(peer) == answered_before  # none of its parts was answered
        assert not peer.server.messages  # nor any reply taken

        pubsub = redis_client.pubsub()
        await pubsub.subscribe(f"{key_prefix}:news")
        try:
            async with gateway_process(path):
                sent = await peer.sent_to(CITIZEN, len(REPLIES))
                assert sorted(text for text, _, _ in sent) == sorted(REPLIES)
                # Each recorded sent (the outbox entry deleted in the same step): nothing left to send.
                assert sorted(await sent_news(pubsub, len(REPLIES))) == sorted(REPLIES)
                await peer.server.until(lambda: True if answers_seen(peer) >= answered_before + 3 else None)
                tickets = await created_tickets(redis_client, key_prefix)
                outbox = await redis_client.xlen(f"{key_prefix}:outbox:sms")
        finally:
            await pubsub.aclose()
    assert len(peer.server.messages) == len(REPLIES)  # each reply taken once
    part_ids = [part for _, parts, _ in sent for part in parts]
    assert len(part_ids) == len(set(part_ids)) == 1 + 3  # every part taken once
    assert submits_seen(peer) == 1 + 4  # the one lost on the way, then each part once
    assert outbox == 0
    assert len(tickets) == 2 and tickets[0] == ticket_id  # one ticket per accepted message
    doc = await redis_client.hget(f"{key_prefix}:t:{tickets[1]}", "doc")
    long_sms = Ticket.model_validate_json(doc)
    assert (long_sms.citizen.phone, long_sms.text, long_sms.flags) == (OTHER_CITIZEN, LONG_CHINESE, ())


async def sent_news(pubsub: Any, count: int) -> list[str]:
    """The texts of the first `count` replies recorded as sent (`hg:news`)."""
    texts: list[str] = []
    async with asyncio.timeout(15):
        while len(texts) < count:
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            news = ConversationNews.parse(message["data"]) if message else None
            if news is not None and news.message.status == "sent":
                texts.append(news.message.text)
    return texts
