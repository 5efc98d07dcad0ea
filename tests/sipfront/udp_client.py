"""A plain UDP socket that sends SIP requests to the front from a chosen loopback address
(127.0.0.0/8 is all local on Linux) and reads the answers: for requests no SIP stack would build."""

from __future__ import annotations

import asyncio
import re
import socket
import time


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

    def send(self, message: str) -> None:
        """A request exactly as written (its top Via should name `self.via`, to get the answer)."""
        self.sock.sendto(message.encode(), self.front)

    @property
    def via(self) -> str:
        return f"{self.source}:{self.port}"

    async def answers(self, call_id: str, timeout: float = 3.0) -> list[str]:
        """Every answer for `call_id` until a final one arrived or `timeout` s passed (status lines
        and headers, provisional ones included)."""
        found: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := deadline - loop.time()) > 0:
            try:
                data = await asyncio.wait_for(loop.sock_recv(self.sock, 65535), left)
            except TimeoutError:
                break
            text = data.decode(errors="replace")
            if re.search(rf"^(Call-ID|i)\s*:\s*{re.escape(call_id)}\s*$", text, re.M | re.I):
                found.append(text)
                if int(text.split(" ", 2)[1]) >= 200:
                    break
        return found
