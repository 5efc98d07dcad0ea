"""A Kamailio that restarts while the workers hold calls: its call load is rebuilt from their
heartbeats before callers are routed, and each of those calls gives its slot back when it ends.

Before: 8 calls up on 4 full workers, Kamailio SIGKILLed and restarted, and the next INVITE went to
the workers in turn (each answered 503, was marked down, and one crashed). Real Redis, media
workers, Kamailio restarted by the same supervision `run` uses, SIPp and baresip callers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from gateway.sipfront.rpc import Target
from peers.sip import Peers, uac_scenario
from tests.sipfront.front_stack import FrontStack, StackArgs, front_stack

pytestmark = pytest.mark.slow

NO_ASR = {"enabled": False, "navigation_enabled": False}  # the front is under test, not speech


async def _metric(stack: FrontStack, name: str) -> int:
    value = await stack.redis.hget(f"{stack.config.redis.key_prefix}:metrics", name)
    return int(value or 0)


async def _callers(stack: FrontStack) -> dict[str, str]:
    return {worker_id: info.get("callers", "") for worker_id, info in (await stack.worker_info()).items()}


def _loads(targets: dict[str, Target]) -> dict[str, int]:
    return {address: target.load for address, target in targets.items()}


async def test_a_restarted_front_counts_the_calls_the_workers_hold_and_frees_each_when_it_ends(
    stack_args: StackArgs, peers: Peers, sipp_available: None, baresip_available: None, caller_wav: Path
) -> None:
    async with front_stack(**stack_args, workers=4, asr=NO_ASR, deadline=150) as stack:
        assert stack.running is not None and stack.kamailio is not None and stack.rpc is not None
        # 8 callers fill the 4 workers (2 each): one baresip caller that hangs up on cue, 7 SIPp ones.
        caller = await peers.caller(caller_wav, user="13812345678")
        await caller.dial(stack.dial_uri())
        await caller.wait_event("CALL_ESTABLISHED", 5)
        held = uac_scenario(stack.recordings.parent, audio_pcap=None, pause_ms_before=25_000, hold_ms_after=100)
        sipp = await peers.sipp(held, target=stack.front, service="12345", calls=7, concurrency=7, rate=20)
        full = {address: 2 for address in stack.worker_sips.values()}
        await stack.wait_targets(lambda t: _loads(t) == full, 10, "every worker full")
        await stack.wait_for(lambda: _all(stack, "2"), 5)

        # Kamailio dies; the supervision starts it again after restart_delay (1 s). Callers are
        # routed again once the new one has the workers' calls in its load.
        killed = stack.kamailio.pid
        assert killed is not None
        os.kill(killed, signal.SIGKILL)
        killed_at = time.monotonic()
        async with asyncio.timeout(15):
            while stack.kamailio.starts < 2:
                await asyncio.sleep(0.05)
        await stack.running.wait_routing(15)
        assert stack.kamailio.pid not in (None, killed)
        print(f"\ncallers routed again {time.monotonic() - killed_at:.2f} s after the kill, "
              f"{stack.running.held.rebuilt_in:.2f} s after the new Kamailio was ready")  # fmt: skip

        # Before routing, the new Kamailio was given the 8 calls, 2 per worker, from the heartbeats.
        assert _loads(await stack.targets()) == full, stack.kamailio_log()
        assert await stack.rpc.htable("held") == full

        # So the next caller gets 503 from Kamailio itself: no worker sees the INVITE.
        extra = uac_scenario(stack.recordings.parent, audio_pcap=None, pause_ms_before=500, hold_ms_after=100)
        refused = await (await peers.sipp(extra, target=stack.front, service="12345")).wait(15)
        assert dict(refused.statuses) == {503: 1}, str(refused)
        assert await _metric(stack, "voice.rejected_full") == 0, "a worker was offered the caller"
        assert await _callers(stack) == dict.fromkeys(stack.workers, "2")
        assert "every worker is full or down; 503" in stack.kamailio_log(20_000)
        assert _loads(await stack.targets()) == full

        # A call from before the restart ends: its BYE (a dialog the new Kamailio never saw) frees
        # its worker's slot, and the next caller is routed there.
        await caller.hangup()
        freed = await stack.wait_targets(lambda t: sum(_loads(t).values()) == 7, 10, "one held call ended")
        (address,) = [a for a, target in freed.items() if target.load == 1]
        assert (await stack.rpc.htable("held"))[address] == 1
        routed = await (await peers.sipp(extra, target=stack.front, service="12345")).wait(20)
        assert routed.successful == 1, str(routed)
        assert await _metric(stack, "voice.rejected_full") == 0

        # The held SIPp calls end by themselves: every held entry and every load goes back to 0.
        result = await sipp.wait(40)
        assert result.successful == 7, str(result)
        await stack.wait_targets(lambda t: not any(_loads(t).values()), 10, "every load back to 0")
        assert not any((await stack.rpc.htable("held")).values())
        log = stack.kamailio_log(500_000)
        assert "cannot find load" not in log, "a BYE whose call had no load entry"
        assert log.count("held before this start ended") == 8, log


async def _all(stack: FrontStack, callers: str) -> bool:
    return set((await _callers(stack)).values()) == {callers}
