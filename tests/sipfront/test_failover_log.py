"""Kamailio's "worker is down" line names the worker, also when a call failed over.

A worker that fails a call (here: answers 503) is marked down from the failure route, where the
message at hand is the caller's INVITE: the line used to name its Request-URI (the number called)
instead of the worker. The "worker" is SIPp answering every INVITE 503 and Kamailio's OPTIONS probes
200 (`-aa`), the only destination of a real Kamailio.
"""

from __future__ import annotations

import re

import pytest

from peers.sip import Peers, uac_scenario, uas_reject_scenario
from tests.sipfront.front_stack import FrontStack, StackArgs, front_stack

pytestmark = pytest.mark.slow



async def test_a_worker_marked_down_by_a_failed_call_is_named_in_kamailios_log(
    stack_args: StackArgs, peers: Peers, sipp_available: None
) -> None:
    tmp = stack_args["tmp_path"]
    failing = uas_reject_scenario(tmp, 503, "Service Unavailable")
    worker = await peers.sipp(failing, calls=100, extra_args=["-aa"])
    front = {"workers": [worker.address], "failover_tries": 1}
    async with front_stack(**stack_args, workers=0, front=front) as stack:
        caller = uac_scenario(stack.recordings.parent, audio_pcap=None, pause_ms_before=100, hold_ms_after=100)
        result = await (await peers.sipp(caller, target=stack.front, service="12345")).wait(15)
        assert dict(result.statuses) == {503: 1}, str(result)

        async def down_line() -> str | None:
            log = stack.kamailio_log(50_000)
            return next((line for line in log.splitlines() if "is down" in line), None)

        line = await stack.wait_for(down_line, 5)
        assert f"sipfront: worker sip:{worker.address} is down (it failed a call)" in line, line
        assert "12345" not in line, line
        # The next probe brings it back, named the same way.
        await _up_again(stack, worker.address)


async def _up_again(stack: FrontStack, address: str) -> None:
    async def up() -> bool:
        return bool(re.search(rf"sipfront: worker sip:{re.escape(address)} is up", stack.kamailio_log(50_000)))

    await stack.wait_for(up, stack.config.sipfront.probe_interval + stack.config.sipfront.fr_timer + 2)
