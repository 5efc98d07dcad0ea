"""A media worker sent the SIP that once killed it or that it answered wrongly, byte for byte.

- INVITEs without an SDP offer (no body; a body without Content-Type) refused by a full worker (503)
  or for a number with no flow (404): pjsua2 2.15.1 aborted the worker in
  `pjsip_rx_data_free_cloned` on every one (docs/voice.md, "Refusing a call").
- RFC 4475 `clerr` and `mismatch01`, which PJSIP answered 200 (docs/voice.md, "Malformed requests").

A real worker process each time (`voice_stack`); after the bad messages it still holds its callers
and answers a normal call. Marked slow.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TypedDict

import pytest

from peers.sip import free_port_range
from tests.voice.conftest import StackArgs
from tests.voice.rfc4475 import CLERR, MISMATCH01
from tests.voice.sip_wire import SipWire, sdp_offer
from tests.voice.voice_stack import VoiceStack, voice_stack

pytestmark = pytest.mark.slow

class Offerless(TypedDict, total=False):
    """`SipWire.invite`'s arguments that leave an INVITE without an offer."""

    body: str
    content_type: str | None


NO_OFFER: dict[str, Offerless] = {
    "no body": {"body": ""},
    "a body without Content-Type": {"body": sdp_offer(9), "content_type": None},
}


@pytest.fixture
async def wire() -> AsyncIterator[list[SipWire]]:
    opened: list[SipWire] = []
    yield opened
    for one in opened:
        one.close()


async def open_wire(stack: VoiceStack, opened: list[SipWire]) -> SipWire:
    one = await SipWire.open(stack.sip)
    opened.append(one)
    return one


def alive(stack: VoiceStack) -> bool:
    assert stack.worker.process is not None
    return stack.worker.process.returncode is None


async def a_normal_call_completes(sip: SipWire, rtp_port: int) -> None:
    call = await sip.call("12345", rtp_port)
    assert await sip.bye(call) == 200


async def test_invites_without_an_offer_to_a_full_worker_get_503_and_it_lives(
    stack_args: StackArgs, wire: list[SipWire]
) -> None:
    async with voice_stack(**stack_args) as stack:
        sip = await open_wire(stack, wire)
        rtp = free_port_range(8)
        held = [await sip.call("12345", rtp), await sip.call("12345", rtp + 2)]  # its 2 callers: full
        for name, variant in NO_OFFER.items():
            invite = sip.invite("12345", **variant)
            refused = await sip.answered(invite)
            assert refused.status == 503, f"{name}: {refused.text}"
        # The same with an offer, the path that always survived, for comparison.
        assert (await sip.answered(sip.invite("12345", sdp_offer(rtp + 4)))).status == 503
        assert alive(stack)
        for call in held:
            assert await sip.bye(call) == 200, "the held caller was still up"
        await a_normal_call_completes(sip, rtp + 6)
        assert alive(stack)


async def test_invites_without_an_offer_for_a_number_with_no_flow_get_404_and_it_lives(
    stack_args: StackArgs, wire: list[SipWire]
) -> None:
    async with voice_stack(**stack_args, default_flow=None) as stack:
        sip = await open_wire(stack, wire)
        rtp = free_port_range(4)
        held = await sip.call("12345", rtp)
        for name, variant in NO_OFFER.items():
            refused = await sip.answered(sip.invite("99999", **variant))
            assert refused.status == 404, f"{name}: {refused.text}"
        assert alive(stack)
        assert await sip.bye(held) == 200
        await a_normal_call_completes(sip, rtp + 2)
        assert alive(stack)


@pytest.mark.parametrize(
    ("message", "call_id", "cseq_method"),
    [(CLERR, "clerr.0ha0isndaksdjweiafasdk3", "INVITE"), (MISMATCH01, "mismatch01.dj0234sxdfl3", "INVITE")],
    ids=["clerr", "mismatch01"],
)
async def test_rfc4475_torture_requests_get_400_and_a_normal_call_follows(
    stack_args: StackArgs, wire: list[SipWire], message: str, call_id: str, cseq_method: str
) -> None:
    # The default flow takes any number, so clerr's sip:user@ would be answered if it got through.
    async with voice_stack(**stack_args, default_flow="12345-default") as stack:
        sip = await open_wire(stack, wire)
        sip.send(message.format(via=sip.via))
        answer = await sip.final(call_id, cseq_method)
        assert answer.status == 400, answer.text  # not 100 Trying and 200 (INVITE) or 200 (OPTIONS)
        await a_normal_call_completes(sip, free_port_range(2))
        assert alive(stack)


async def test_a_packet_pjsip_cannot_process_is_logged_in_one_line_without_the_callers_number(
    stack_args: StackArgs, wire: list[SipWire], capfd: pytest.CaptureFixture[str]
) -> None:
    # PJSIP logged such a packet whole (From and To numbers included) after its error line.
    async with voice_stack(**stack_args) as stack:
        sip = await open_wire(stack, wire)
        sip.send(
            f"BYE sip:12345@{stack.sip} SIP/2.0\r\nFrom: <sip:13812345678@{sip.via}>;tag=1\r\n"
            f"To: <sip:12345@{stack.sip}>\r\nCall-ID: no-via@test\r\nCSeq: 1 BYE\r\nContent-Length: 0\r\n\r\n"
        )  # no Via: PJSIP cannot answer it
        await a_normal_call_completes(sip, free_port_range(2))  # the BYE was read before this call
        assert alive(stack)
    log = capfd.readouterr().err + capfd.readouterr().out
    said = [line for line in log.splitlines() if "gateway.voice.pjsip" in line]
    assert len(said) == 1 and "Missing required header" in said[0] and "Via" in said[0], log[-3000:]
    assert "13812345678" not in log and "CSeq: 1 BYE" not in log, "the packet itself is not logged"
