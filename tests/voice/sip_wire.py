"""SIP over one UDP socket, byte for byte, for tests that must send exactly a given message.

SIPp builds its own requests from a scenario; the torture messages of RFC 4475 and the INVITEs
without an offer that once aborted a worker have to go out as written. `SipWire` sends text, waits
for final responses by Call-ID and CSeq method, and does the little a UAC must (ACK a final
response, BYE a call) so a worker's transactions end cleanly.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import uuid
from dataclasses import dataclass, field

LOOPBACK = "127.0.0.1"
_counter = itertools.count(1)


@dataclass(frozen=True)
class Response:
    status: int
    text: str

    def header(self, name: str) -> str:
        return _header(self.text, name)

    @property
    def reason(self) -> str:
        return self.text.split("\r\n", 1)[0].split(" ", 2)[2]


@dataclass
class Call:
    """A call this side placed: enough of its dialog to ACK and BYE it."""

    call_id: str
    number: str
    from_tag: str
    to: str = ""  # the worker's To, with its tag, once it answered
    cseq: int = 1
    final: Response | None = None


def sdp_offer(port: int) -> str:
    """PCMA and RFC 4733 events at `port`: what the worker answers (its RTP goes nowhere)."""
    return (
        "v=0\r\n"
        f"o=- {port} 1 IN IP4 {LOOPBACK}\r\n"
        "s=-\r\n"
        f"c=IN IP4 {LOOPBACK}\r\n"
        "t=0 0\r\n"
        f"m=audio {port} RTP/AVP 8 101\r\n"
        "a=rtpmap:8 PCMA/8000\r\n"
        "a=rtpmap:101 telephone-event/8000\r\n"
        "a=fmtp:101 0-15\r\n"
    )


class _Inbox(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.messages: list[str] = []
        self.arrived = asyncio.Event()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.messages.append(data.decode("latin-1"))
        self.arrived.set()


@dataclass
class SipWire:
    target: tuple[str, int]
    transport: asyncio.DatagramTransport
    inbox: _Inbox
    sent: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, sip: str) -> SipWire:
        host, port = sip.rsplit(":", 1)
        loop = asyncio.get_running_loop()
        transport, inbox = await loop.create_datagram_endpoint(_Inbox, local_addr=(LOOPBACK, 0))
        return cls((host, int(port)), transport, inbox)

    @property
    def via(self) -> str:
        host, port = self.transport.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    def close(self) -> None:
        self.transport.close()

    def send(self, message: str | bytes) -> None:
        data = message.encode("latin-1") if isinstance(message, str) else message
        self.sent.append(data.decode("latin-1"))
        self.transport.sendto(data, self.target)

    async def final(self, call_id: str, method: str, timeout: float = 5.0) -> Response:
        """The first final response (>= 200) to `method` in call `call_id`."""
        async with asyncio.timeout(timeout):
            while True:
                for text in self.inbox.messages:
                    response = _response(text)
                    if (
                        response is not None
                        and response.status >= 200
                        and response.header("Call-ID") == call_id
                        and response.header("CSeq").split()[-1:] == [method]
                    ):
                        return response
                self.inbox.arrived.clear()
                await self.inbox.arrived.wait()

    async def request(self, method: str, call_id: str, timeout: float = 10.0) -> str:
        """The first request `method` the worker sent in call `call_id` (a BYE, say)."""
        async with asyncio.timeout(timeout):
            while True:
                for text in self.inbox.messages:
                    if text.startswith(f"{method} ") and _header(text, "Call-ID") == call_id:
                        return text
                self.inbox.arrived.clear()
                await self.inbox.arrived.wait()

    def reply(self, request: str, status: int = 200, reason: str = "OK") -> None:
        """Answer a request of the worker's (its Via, From, To, Call-ID and CSeq echoed)."""
        echoed = [f"{name}: {_header(request, name)}" for name in ("Via", "From", "To", "Call-ID", "CSeq")]
        self.send(_message(f"SIP/2.0 {status} {reason}", echoed, ""))

    # --- a UAC's part ---------------------------------------------------------------------------

    def invite(self, number: str, body: str = "", content_type: str | None = "application/sdp") -> Call:
        """Send an INVITE; `body` empty is a late offer (no body at all), `content_type` None sends the
        body without a Content-Type header (PJSIP then sees no offer either)."""
        call = Call(call_id=f"{uuid.uuid4().hex}@sip-wire", number=number, from_tag=f"w{next(_counter)}")
        headers = self._dialog_headers(call, "INVITE", branch=_branch())
        headers.append(f"Contact: <sip:caller@{self.via}>")
        if body and content_type is not None:
            headers.append(f"Content-Type: {content_type}")
        self.send(_message(f"INVITE {self._uri(number)} SIP/2.0", headers, body))
        return call

    async def answered(self, call: Call, timeout: float = 5.0) -> Response:
        """The INVITE's final response, ACKed (a 2xx in a new transaction, any other in the INVITE's)."""
        response = await self.final(call.call_id, "INVITE", timeout)
        call.final = response
        call.to = response.header("To")
        invite = next(text for text in self.sent if call.call_id in text and text.startswith("INVITE"))
        branch = _branch() if response.status < 300 else re.search(r"branch=([^;\s]+)", invite)[1]  # type: ignore[index]
        self.send(_message(f"ACK {self._uri(call.number)} SIP/2.0", self._dialog_headers(call, "ACK", branch), ""))
        return response

    async def call(self, number: str, rtp_port: int) -> Call:
        """A normal call: an INVITE with an SDP offer, answered 200 and ACKed."""
        call = self.invite(number, sdp_offer(rtp_port))
        response = await self.answered(call)
        assert response.status == 200, response.text
        return call

    async def bye(self, call: Call, timeout: float = 5.0) -> int:
        """Hang up; the BYE's status (200 while the call was up, 481 once the worker forgot it)."""
        call.cseq += 1
        headers = self._dialog_headers(call, "BYE", _branch())
        self.send(_message(f"BYE {self._uri(call.number)} SIP/2.0", headers, ""))
        return (await self.final(call.call_id, "BYE", timeout)).status

    def _uri(self, number: str) -> str:
        return f"sip:{number}@{self.target[0]}:{self.target[1]}"

    def _dialog_headers(self, call: Call, method: str, branch: str) -> list[str]:
        return [
            f"Via: SIP/2.0/UDP {self.via};branch={branch};rport",
            "Max-Forwards: 70",
            f"From: <sip:13800000000@{self.via}>;tag={call.from_tag}",
            f"To: {call.to}" if call.to else f"To: <{self._uri(call.number)}>",
            f"Call-ID: {call.call_id}",
            f"CSeq: {call.cseq} {method}",
        ]


def _header(text: str, name: str) -> str:
    match = re.search(rf"^{re.escape(name)}\s*:\s*(.*?)\r?$", text, re.MULTILINE | re.IGNORECASE)
    return match[1] if match else ""


def _branch() -> str:
    return f"z9hG4bK-w{uuid.uuid4().hex[:16]}"


def _message(start: str, headers: list[str], body: str) -> str:
    return "\r\n".join([start, *headers, f"Content-Length: {len(body.encode('latin-1'))}", "", body])


def _response(text: str) -> Response | None:
    match = re.match(r"SIP/2\.0 (\d{3}) ", text)
    return Response(int(match[1]), text) if match else None
