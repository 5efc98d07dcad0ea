"""A long SMS taken and written, whose parts' answers only partly reached the peer (the connection
dropped between them, or the gateway died between them): the peer delivers again only the parts it
has no answer for. Those parts are the rest of a message already ticketed, never a second,
truncated ticket: answered OK at once by a session that handed the message over itself, or after
the reassembly timeout by a restarted gateway, which finds in Redis that the message was taken.
For both protocols, with the faithful SMSC and ISMG over real TCP and a real Redis."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis.asyncio as aioredis

from gateway.channels.contract import ChannelIntake
from gateway.channels.sms_channel import LONG_SMS_TAKEN_BEFORE, SmsChannel
from gateway.config import GatewayConfig, SmsChannelConfig
from gateway.messages import Created
from gateway.shell.app import Gateway
from gateway.ticket import Ticket
from tests.channels.sms_stack import CITIZEN, LONG_CHINESE, PROTOCOLS, Peer, Protocol, channel_bound, sms_peer
from tests.conftest import ConfigFactory

pytestmark = pytest.mark.parametrize("protocol", PROTOCOLS)

# The session's reassembly timeout: short, so that parts held for a message would be handed over
# as an incomplete one soon after they came.
REASSEMBLY_TIMEOUT = 0.5


@asynccontextmanager
async def gateway_with_sms(
    config: GatewayConfig, peer: Peer, **tuning: Any
) -> AsyncIterator[tuple[Gateway, SmsChannel]]:
    """A gateway whose SMS channel logs in to `peer`, its session tuned (`tuning`: the session's
    settings, the reassembly timeout short)."""
    client = aioredis.Redis.from_url(str(config.redis.url))
    gateway = Gateway(config, client)
    sms = SmsChannelConfig.model_validate(peer.channel_config())
    intake = ChannelIntake(gateway.desk, gateway.queue, gateway.live, sms.duplicate_window)
    tuning = {"reassembly_timeout": REASSEMBLY_TIMEOUT, "reconnect_min": 0.1, **tuning}
    channel = SmsChannel(sms, peer.secret, intake, gateway.queue, **tuning)
    gateway.add(channel)
    gateway.add(channel.sender)
    await gateway.start()
    try:
        yield gateway, channel
    finally:
        await gateway.stop()
        await client.aclose()


async def answered_first_part_then_dropped(peer: Peer, channel: SmsChannel) -> list[Any]:
    """A 3-part SMS taken and written; the peer reads the answer to part 1, then the connection
    drops (the answers to parts 2 and 3 lost). The names of its parts' deliveries."""
    await channel_bound(channel)
    peer.server.drop_after_answers(1)
    names = await peer.deliver(LONG_CHINESE)
    assert len(names) == 3
    assert await peer.server.results_of(names[0]) == [0]
    await peer.server.until(lambda: None if peer.server.bound() else True)
    assert peer.server.deliver_results.keys().isdisjoint(names[1:])  # parts 2-3: owed again
    return names


async def one_ticket_with_the_whole_text(gateway: Gateway) -> None:
    entries = await gateway.redis.xrange(gateway.queue.keys.created)
    assert len(entries) == 1  # the redelivered parts made no second ticket
    ticket_id = Created.parse(entries[0][1]).ticket
    ticket = Ticket.model_validate_json(await gateway.redis.hget(gateway.queue.keys.ticket(ticket_id), "doc"))
    assert (ticket.citizen.phone, ticket.text, ticket.flags) == (CITIZEN, LONG_CHINESE, ())
    # Nor did they join it as a truncated copy of its text (the citizen's conversation is open).
    assert await gateway.redis.llen(gateway.queue.keys.messages(ticket_id)) == 1


async def test_parts_redelivered_to_the_session_that_handed_their_message_over_are_answered_at_once(
    protocol: Protocol, config_factory: ConfigFactory
) -> None:
    async with sms_peer(protocol) as peer, gateway_with_sms(config_factory(), peer) as (gateway, channel):
        names = await answered_first_part_then_dropped(peer, channel)
        # After the next login the peer delivers parts 2 and 3 again, and only them.
        for name in names[1:]:
            assert await peer.server.results_of(name) == [0]
        await one_ticket_with_the_whole_text(gateway)
        assert channel.link.health().counters.messages_in == 1  # the parts were not handed over again
        assert peer.server.deliver_results[names[0]] == [0]  # part 1 was never delivered again


async def test_parts_redelivered_to_a_restarted_gateway_are_answered_without_a_second_ticket(
    protocol: Protocol, config_factory: ConfigFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # A conversation window shorter than the reassembly timeout: what the redelivered parts would
    # make is a ticket of its own, as for a citizen whose ticket was settled meanwhile.
    config = config_factory(conversations={"window": REASSEMBLY_TIMEOUT / 10})
    async with sms_peer(protocol) as peer:
        # The first gateway would log in again only after 30 s: it is stopped before that.
        async with gateway_with_sms(config, peer, reconnect_min=30.0) as (_, first):
            names = await answered_first_part_then_dropped(peer, first)
        # A new process (a new session, nothing in memory) on the same Redis.
        with caplog.at_level(logging.INFO, logger="gateway.channels.sms"):
            async with gateway_with_sms(config, peer) as (gateway, _):
                for name in names[1:]:
                    assert await peer.server.results_of(name) == [0]
                await one_ticket_with_the_whole_text(gateway)
    said = [record for record in caplog.records if record.msg == LONG_SMS_TAKEN_BEFORE]
    assert len(said) == 1  # once for the two parts
    assert CITIZEN not in said[0].getMessage()  # the number masked
