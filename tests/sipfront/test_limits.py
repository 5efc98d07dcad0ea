"""The front's guards, with SIP requests sent from several loopback addresses (127.0.0.0/8 is all
local on Linux): message size (513), flood limiting of untrusted sources (pike), and 403 for an
INVITE from an address that is not a trunk. Real Kamailio; the client is a plain UDP socket.
"""

from __future__ import annotations

import pytest

from tests.sipfront.front_stack import FrontStack, StackArgs, front_stack
from tests.sipfront.udp_client import UdpClient

pytestmark = pytest.mark.slow


def _client(stack: FrontStack, source: str) -> UdpClient:
    return UdpClient(source, stack.front)


async def test_oversized_request_gets_513_and_a_flood_from_one_untrusted_address_is_cut(
    stack_args: StackArgs,
) -> None:
    front = {"max_message_bytes": 2048, "pike_requests": 10, "pike_window": 2}
    async with front_stack(**stack_args, workers=0, front=front) as stack:
        big = _client(stack, "127.0.0.3")
        big.request("OPTIONS", body="x" * 1500)
        big.request("OPTIONS", body="x" * 3000)
        assert sorted(await big.statuses(2)) == [200, 513], stack.kamailio_log()
        big.close()

        flood = _client(stack, "127.0.0.4")
        for _ in range(60):
            flood.request("OPTIONS")
        answered = len(await flood.statuses(60, timeout=2.0))
        print(f"\npike: {answered} of 60 requests from one untrusted address answered")
        assert 1 <= answered <= 30, answered
        flood.close()

        # Another untrusted address is not affected, and a trunk is never limited.
        other = _client(stack, "127.0.0.5")
        other.request("OPTIONS")
        assert await other.statuses(1) == [200]
        other.close()
        trunk = _client(stack, "127.0.0.1")
        for _ in range(60):
            trunk.request("OPTIONS")
        assert len(await trunk.statuses(60)) == 60
        trunk.close()


async def test_invite_from_a_loopback_alias_that_is_no_trunk_gets_403(stack_args: StackArgs) -> None:
    async with front_stack(**stack_args, workers=0) as stack:
        stranger = _client(stack, "127.0.0.3")
        stranger.request("INVITE", user="12345")
        assert await stranger.statuses(1) == [403], stack.kamailio_log()
        stranger.request("MESSAGE", user="12345")
        assert await stranger.statuses(1) == [405]
        stranger.close()
