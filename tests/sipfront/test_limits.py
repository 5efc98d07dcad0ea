"""The front's guards, with SIP requests sent from several loopback addresses (127.0.0.0/8 is all
local on Linux): message size (513), flood limiting of untrusted sources (pike), and 403 for an
INVITE from an address that is not a trunk. Real Kamailio; the client is a plain UDP socket.
"""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from tests.sipfront.front_stack import FrontStack, front_stack

pytestmark = pytest.mark.slow


class UdpClient:
    """Sends SIP requests from `source` and collects the status codes of the answers."""

    def __init__(self, source: str, front: str) -> None:
        host, port = front.rsplit(":", 1)
        self.front = (host, int(port))
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((source, 0))
        self.sock.setblocking(False)
        self.source, self.port = self.sock.getsockname()
        self.sent = 0

    def request(self, method: str, user: str = "", body: str = "") -> None:
        self.sent += 1
        tag = f"{self.port}x{self.sent}x{time.monotonic_ns()}"
        target = f"sip:{user + '@' if user else ''}{self.front[0]}:{self.front[1]}"
        message = (
            f"{method} {target} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {self.source}:{self.port};branch=z9hG4bK{tag}\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{self.source}>;tag={tag}\r\n"
            f"To: <{target}>\r\n"
            f"Call-ID: {tag}@{self.source}\r\n"
            f"CSeq: 1 {method}\r\n"
            f"Contact: <sip:probe@{self.source}:{self.port}>\r\n"
            f"Content-Length: {len(body)}\r\n\r\n{body}"
        )
        self.sock.sendto(message.encode(), self.front)

    async def statuses(self, expect: int, timeout: float = 3.0) -> list[int]:
        """Final status codes (provisionals skipped) until `expect` arrived or `timeout` s passed."""
        codes: list[int] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while len(codes) < expect and (left := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), left)
            except TimeoutError:
                break
            status = int(data.split(b" ", 2)[1])
            if status >= 200:
                codes.append(status)
        return codes

    def close(self) -> None:
        self.sock.close()


def _client(stack: FrontStack, source: str) -> UdpClient:
    return UdpClient(source, stack.front)


async def test_oversized_request_gets_513_and_a_flood_from_one_untrusted_address_is_cut(
    stack_args: dict[str, object],
) -> None:
    front = {"max_message_bytes": 2048, "pike_requests": 10, "pike_window": 2}
    async with front_stack(**stack_args, workers=0, front=front) as stack:  # type: ignore[arg-type]
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


async def test_invite_from_a_loopback_alias_that_is_no_trunk_gets_403(stack_args: dict[str, object]) -> None:
    async with front_stack(**stack_args, workers=0) as stack:  # type: ignore[arg-type]
        stranger = _client(stack, "127.0.0.3")
        stranger.request("INVITE", user="12345")
        assert await stranger.statuses(1) == [403], stack.kamailio_log()
        stranger.request("MESSAGE", user="12345")
        assert await stranger.statuses(1) == [405]
        stranger.close()
