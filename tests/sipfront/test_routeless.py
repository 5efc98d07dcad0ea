"""In-dialog requests that come without the Route headers the front's Record-Route asked for.

SIPp's own built-in `uac` scenario ignores Record-Route: its ACK and BYE go to the address it called
(the front), with no Route header. Before, the front dropped the ACK and answered the BYE 404; the
worker kept the call until PJSIP's 32 s ACK timeout. Real Kamailio, a real worker, SIPp's scenario
as SIPp itself prints it (`sipp -sd uac`).
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from peers.sip import Peers
from tests.sipfront.front_stack import FrontStack, StackArgs, front_stack

pytestmark = pytest.mark.slow

NO_ASR = {"enabled": False, "navigation_enabled": False}
HOLD_MS = 3000  # the uac scenario's pause between ACK and BYE: the worker would resend its 200 at
# 0.5, 1.5 and 3.5 s (T1 doubling) if no ACK reached it


def builtin_uac(directory: Path) -> Path:
    # `sipp -sd` prints the scenario and exits 99 ("normal exit without calls processed").
    dumped = subprocess.run(["sipp", "-sd", "uac"], capture_output=True, text=True).stdout
    assert dumped.startswith("<?xml") and '<scenario name="Basic Sipstone UAC">' in dumped, dumped[:500]
    path = directory / "sipp-builtin-uac.xml"
    path.write_text(dumped)
    return path


def received(log: str, status: int, method: str) -> list[str]:
    """The `status` answers to `method` in a SIPp message log, each as received."""
    messages = re.split(r"^-{20,} \S.*\n", log, flags=re.M)
    answers = [m for m in messages if re.match(r"(UDP )?message received", m)]
    status_line = re.compile(rf"^SIP/2\.0 {status} ", re.M)
    cseq = re.compile(rf"^CSeq:\s*\d+ {method}", re.M)
    return [answer for answer in answers if status_line.search(answer) and cseq.search(answer)]


async def test_ack_and_bye_without_route_headers_reach_the_worker(
    stack_args: StackArgs, peers: Peers, sipp_available: None
) -> None:
    async with front_stack(**stack_args, asr=NO_ASR) as stack:
        scenario = builtin_uac(stack.recordings.parent)
        sipp = await peers.sipp(
            scenario, target=stack.front, service="12345", trace_messages=True, extra_args=["-d", str(HOLD_MS)]
        )
        result = await sipp.wait(20)
        messages = (sipp.workdir / f"{scenario.stem}_messages.log").read_text(errors="replace")
        assert result.successful == 1, f"{result}\n{messages[-3000:]}"

        # The ACK reached the worker: it answered the INVITE once, never resending its 200.
        assert len(received(messages, 200, "INVITE")) == 1, messages
        assert len(received(messages, 200, "BYE")) == 1, messages
        # The BYE reached the worker too: the call left it and Kamailio's load at once (without
        # them it kept the call until PJSIP's 32 s ACK timeout).
        await stack.wait_for(lambda: _no_callers(stack), 2)
        await stack.wait_targets(lambda t: all(x.load == 0 for x in t.values()), 2, "the load back to 0")


async def _no_callers(stack: FrontStack) -> bool:
    info = await stack.worker_info()
    return all(i.get("callers") == "0" for i in info.values())
