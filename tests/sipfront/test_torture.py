"""RFC 4475 torture messages sent to the front from a trunk's address, each followed by a normal call.

- 3.1.2.11 `escruri` (escaped headers in the Request-URI) was forwarded to a worker with
  `?Route=%3Csip:example.com%3E` still in its Request-URI; it now gets 400 from Kamailio.
- 3.1.1.1 `wsinv` (valid: every header folded or spaced oddly) gets no answer: Kamailio 5.6's parser
  rejects its folded CSeq (`parse_cseq(): no method found`) and drops the request (docs/deploy.md).

The messages are the RFC's, but for the top Via: its sent-by is this test's socket (the RFC's
host-of-the-hour.example.com / 192.0.2.2 would send any answer where nobody listens).
"""

from __future__ import annotations

import pytest

from peers.sip import Peers, uac_scenario
from tests.sipfront.front_stack import FrontStack, StackArgs, front_stack
from tests.sipfront.udp_client import UdpClient

pytestmark = pytest.mark.slow

NO_ASR = {"enabled": False, "navigation_enabled": False}

ESCRURI_CALL_ID = "escruri.23940-asdfhj-aje3br-234q098w-fawerh2q-h4n5"
ESCRURI = (
    "INVITE sip:user@example.com?Route=%3Csip:example.com%3E SIP/2.0\r\n"
    "To: sip:user@example.com\r\n"
    "From: sip:caller@example.net;tag=341518\r\n"
    "Max-Forwards: 7\r\n"
    "Contact: <sip:caller@host39923.example.net>\r\n"
    f"Call-ID: {ESCRURI_CALL_ID}\r\n"
    "CSeq: 149209342 INVITE\r\n"
    "Via: SIP/2.0/UDP {via};branch=z9hG4bKkdjuw\r\n"
    "Content-Type: application/sdp\r\n"
    "Content-Length: 150\r\n"
    "\r\n"
    "v=0\r\n"
    "o=mhandley 29739 7272939 IN IP4 192.0.2.1\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.1\r\n"
    "t=0 0\r\n"
    "m=audio 49217 RTP/AVP 0 12\r\n"
    "m=video 3227 RTP/AVP 31\r\n"
    "a=rtpmap:31 LPC\r\n"
)

WSINV_CALL_ID = "wsinv.ndaksdj@192.0.2.1"
WSINV = (
    "INVITE sip:vivekg@chair-dnrc.example.com;unknownparam SIP/2.0\r\n"
    "TO :\r\n"
    " sip:vivekg@chair-dnrc.example.com ;   tag    = 1918181833n\r\n"
    'from   : "J Rosenberg \\\\\\""       <sip:jdrosen@example.com>\r\n'
    "  ;\r\n"
    "  tag = 98asjd8\r\n"
    "MaX-fOrWaRdS: 0068\r\n"
    f"Call-ID: {WSINV_CALL_ID}\r\n"
    "Content-Length   : 150\r\n"
    "cseq: 0009\r\n"
    "  INVITE\r\n"
    "Via  : SIP  /   2.0\r\n"
    " /UDP\r\n"
    "    {via};branch=390skdjuw\r\n"
    "s :\r\n"
    "NewFangledHeader:   newfangled value\r\n"
    " continued newfangled value\r\n"
    "UnknownHeaderWithUnusualValue: ;;,,;;,;\r\n"
    "Content-Type: application/sdp\r\n"
    "Route:\r\n"
    " <sip:services.example.com;lr;unknownwith=value;unknown-no-value>\r\n"
    "v:  SIP  / 2.0  / TCP     spindle.example.com   ;\r\n"
    "  branch  =   z9hG4bK9ikj8  ,\r\n"
    " SIP  /    2.0   / UDP  192.168.255.111   ; branch=\r\n"
    " z9hG4bK30239\r\n"
    'm:"Quoted string \\"\\"" <sip:jdrosen@example.com> ; newparam =\r\n'
    "      newvalue ;\r\n"
    "  secondparam ; q = 0.33\r\n"
    "\r\n"
    "v=0\r\n"
    "o=mhandley 29739 7272939 IN IP4 192.0.2.3\r\n"
    "s=-\r\n"
    "c=IN IP4 192.0.2.4\r\n"
    "t=0 0\r\n"
    "m=audio 49217 RTP/AVP 0 12\r\n"
    "m=video 3227 RTP/AVP 31\r\n"
    "a=rtpmap:31 LPC\r\n"
)


def test_each_messages_body_is_as_long_as_its_content_length() -> None:
    for message in (ESCRURI, WSINV):
        assert len(message.split("\r\n\r\n", 1)[1].encode()) == 150


async def _metric(stack: FrontStack, name: str) -> int:
    value = await stack.redis.hget(f"{stack.config.redis.key_prefix}:metrics", name)
    return int(value or 0)


async def _a_normal_call_completes(stack: FrontStack, peers: Peers) -> None:
    assert await stack.tickets() == [] and await _metric(stack, "voice.calls") == 0, "a worker saw the torture"
    scenario = uac_scenario(stack.recordings.parent, audio_pcap=None, pause_ms_before=500, hold_ms_after=100)
    result = await (await peers.sipp(scenario, target=stack.front, service="12345")).wait(20)
    assert result.successful == 1, str(result)
    assert await _metric(stack, "voice.calls") == 1


async def test_escruri_gets_400_from_the_front_and_a_normal_call_follows(
    stack_args: StackArgs, peers: Peers, sipp_available: None
) -> None:
    async with front_stack(**stack_args, asr=NO_ASR) as stack:
        trunk = UdpClient("127.0.0.1", stack.front)
        trunk.send(ESCRURI.format(via=trunk.via))
        (answer,) = await trunk.answers(ESCRURI_CALL_ID)
        assert answer.startswith("SIP/2.0 400 Headers In Request-URI\r\n"), answer
        assert "with headers in its Request-URI refused" in stack.kamailio_log()
        trunk.close()
        await _a_normal_call_completes(stack, peers)


async def test_wsinv_is_dropped_by_kamailios_parser_and_a_normal_call_follows(
    stack_args: StackArgs, peers: Peers, sipp_available: None
) -> None:
    async with front_stack(**stack_args, asr=NO_ASR) as stack:
        trunk = UdpClient("127.0.0.1", stack.front)
        trunk.send(WSINV.format(via=trunk.via))
        dropped = f"core parsing of SIP message failed ({trunk.via}/1)"

        async def parsed_and_dropped() -> bool:
            return dropped in stack.kamailio_log(50_000)

        await stack.wait_for(parsed_and_dropped, 5)
        log = stack.kamailio_log(50_000)
        assert "parse_cseq(): no method found" in log, log
        # Kamailio had nothing to answer with: the request never reached a route.
        trunk.request("OPTIONS")  # from the same socket: its answer comes after anything for wsinv
        assert await trunk.statuses(1) == [200]
        trunk.close()
        await _a_normal_call_completes(stack, peers)
